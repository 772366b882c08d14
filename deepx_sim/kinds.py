"""The layer-kind vocabulary, defined once.

It sits below every stage so that both the model package (which gives each
kind its FLOP formula) and the hardware files (which give a processor's
efficiency per kind) can name kinds without one importing the other.
"""

from __future__ import annotations

from enum import StrEnum


class LayerKind(StrEnum):
    """What a layer computes; decides its FLOP formula and which optimisers apply."""

    INPUT = "input"
    CONV = "conv"
    DEPTHWISE_CONV = "depthwise_conv"
    FC = "fc"
    MATMUL = "matmul"  # product of two activations (attention scores and context)
    EMBEDDING = "embedding"  # table lookup: parameters, no arithmetic
    POOL = "pool"
    ACTIVATION = "activation"
    LRN = "lrn"
    BATCHNORM = "batchnorm"
    LAYERNORM = "layernorm"
    ADD = "add"
    CONCAT = "concat"
    FLATTEN = "flatten"
    VIEW = "view"  # data movement without arithmetic: transpose, slice, split, expand, cast
    DROPOUT = "dropout"
    SOFTMAX = "softmax"
    OTHER = "other"
