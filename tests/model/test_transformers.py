"""Transformers as first-class models: the zoo's BERT-base and ViT-B/16 against their
published sizes, and a torch-style ONNX encoder imported with every parameter counted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from deepx_sim.accuracy import candidate_ranks
from deepx_sim.model import load_model
from deepx_sim.model.execute import run
from deepx_sim.model.layers import LayerKind, get_layer, layers_in_order, total
from deepx_sim.model.onnx import load_onnx

ort = pytest.importorskip("onnxruntime")
RNG = np.random.default_rng(0)


def test_bert_base_matches_its_published_size_and_a_closed_form_for_its_work() -> None:
    graph = load_model("bert_base")
    # Hugging Face bert-base-uncased: 109,482,240 parameters (Devlin et al.'s "110M")
    assert total(graph, "params") == 109_482_240
    linear = 128 * (4 * 768 * 768 + 2 * 768 * 3072)  # q, k, v, out and the MLP, per block
    attention = 2 * 12 * 128 * 128 * 64  # scores and context, 12 heads of 64
    assert total(graph, "macs") == 12 * (linear + attention) + 768 * 768  # + the pooler
    assert get_layer(graph, "embeddings.word").params == 30522 * 768


def test_vit_b16_matches_its_published_size_and_work() -> None:
    graph = load_model("vit_b16")
    assert total(graph, "params") == 86_567_656  # timm vit_base_patch16_224
    # DeiT (Touvron et al. 2021) Table 1: ViT-B/16 at 224, 17.6 G (multiply-adds)
    assert total(graph, "macs") == pytest.approx(17.6e9, rel=0.01)
    fcs = [lay for lay in layers_in_order(graph) if lay.kind == LayerKind.FC]
    assert len(fcs) == 12 * 6 + 1 and all(candidate_ranks(lay) for lay in fcs)  # RLC applies to each


def _tensor(name: str, shape: tuple[int, ...]) -> TensorProto:
    return numpy_helper.from_array((RNG.standard_normal(shape) * 0.2).astype(np.float32), name)


def _linear(nodes: list, inits: list, x: str, name: str, n: int, m: int) -> str:
    """torch's nn.Linear on a 3-D input: MatMul by the transposed weight, then Add the bias."""
    inits += [_tensor(f"{name}.w", (n, m)), _tensor(f"{name}.b", (m,))]
    nodes += [
        helper.make_node("MatMul", [x, f"{name}.w"], [f"{name}.mm"], name=name),
        helper.make_node("Add", [f"{name}.mm", f"{name}.b"], [f"{name}.out"], name=f"{name}.add"),
    ]
    return f"{name}.out"


def _encoder_onnx(tmp_path: Path, tokens: int = 8, width: int = 32, heads: int = 2, vocab: int = 50) -> Path:
    head = width // heads
    nodes: list = []
    inits: list = [
        _tensor("emb", (vocab, width)),
        _tensor("ln.g", (width,)),
        _tensor("ln.b", (width,)),
        numpy_helper.from_array(np.array([1, tokens, heads, head], np.int64), "split_shape"),
        numpy_helper.from_array(np.array([1, tokens, width], np.int64), "merge_shape"),
        numpy_helper.from_array(np.array(np.sqrt(head), np.float32), "sqrt_d"),
        numpy_helper.from_array(np.array(np.sqrt(2.0), np.float32), "sqrt2"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
    ]
    nodes.append(helper.make_node("Gather", ["emb", "ids"], ["x"], name="embed"))
    heads_out = {}
    for part, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
        y = _linear(nodes, inits, "x", part, width, width)
        nodes += [
            helper.make_node("Reshape", [y, "split_shape"], [f"{part}.h"], name=f"{part}.reshape"),
            helper.make_node("Transpose", [f"{part}.h"], [f"{part}.t"], name=f"{part}.transpose", perm=perm),
        ]
        heads_out[part] = f"{part}.t"
    nodes += [
        helper.make_node("MatMul", [heads_out["q"], heads_out["k"]], ["scores"], name="scores"),
        helper.make_node("Div", ["scores", "sqrt_d"], ["scaled"], name="scale"),
        helper.make_node("Softmax", ["scaled"], ["probs"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["probs", heads_out["v"]], ["ctx"], name="context"),
        helper.make_node("Transpose", ["ctx"], ["ctx.t"], name="ctx.transpose", perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["ctx.t", "merge_shape"], ["ctx.m"], name="ctx.merge"),
    ]
    attn = _linear(nodes, inits, "ctx.m", "out", width, width)
    nodes += [
        helper.make_node("Add", [attn, "x"], ["res"], name="residual"),
        helper.make_node("LayerNormalization", ["res", "ln.g", "ln.b"], ["h"], name="ln", axis=-1),
    ]
    up = _linear(nodes, inits, "h", "fc1", width, 4 * width)
    # GELU as opset-17 exporters decompose it: x * 0.5 * (1 + erf(x / sqrt 2))
    nodes += [
        helper.make_node("Div", [up, "sqrt2"], ["g.div"], name="gelu.div"),
        helper.make_node("Erf", ["g.div"], ["g.erf"], name="gelu.erf"),
        helper.make_node("Add", ["g.erf", "one"], ["g.add"], name="gelu.add"),
        helper.make_node("Mul", [up, "g.add"], ["g.mul"], name="gelu.mul"),
        helper.make_node("Mul", ["g.mul", "half"], ["g"], name="gelu.half"),
    ]
    down = _linear(nodes, inits, "g", "fc2", 4 * width, width)
    nodes.append(helper.make_node("Add", [down, "h"], ["y"], name="residual2"))
    graph = helper.make_graph(
        nodes,
        "encoder",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", tokens])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "encoder.onnx"
    onnx.save(model, str(path))
    return path


def test_a_torch_style_encoder_imports_with_every_parameter_and_runs(tmp_path: Path) -> None:
    tokens, width, vocab = 8, 32, 50
    path = _encoder_onnx(tmp_path, tokens, width, vocab=vocab)
    graph = load_onnx(path)
    kinds = {lay.name: lay.kind for lay in layers_in_order(graph)}
    assert LayerKind.OTHER not in kinds.values()
    assert kinds["embed"] == LayerKind.EMBEDDING and kinds["ln"] == LayerKind.LAYERNORM
    assert kinds["scores"] == kinds["context"] == LayerKind.MATMUL
    linear = 4 * (width * width + width) + (width * 4 * width + 4 * width) + (4 * width * width + width)
    assert total(graph, "params") == vocab * width + linear + 2 * width  # embedding, linears, layer norm
    assert get_layer(graph, "q").fc is not None and get_layer(graph, "q").fc.bias  # MatMul + Add: one layer
    assert get_layer(graph, "scores").macs == 2 * tokens * tokens * (width // 2)
    ids = RNG.integers(0, vocab, size=(1, tokens)).astype(np.int64)  # the reshapes fix batch 1
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})[0]
    np.testing.assert_allclose(run(graph, ids.astype(np.float32)), expected, rtol=1e-4, atol=1e-4)
