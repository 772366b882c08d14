"""Real weights of a layer graph, converted to numpy only when asked for.

Importers register, per layer, named tensors (``weight``, ``bias``...) as
zero-argument loaders.  fc weights are always handed out as ``W`` of shape
(m, n) = (out, in), whatever layout the source file used.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from deepx_sim.errors import ModelError

Loader = Callable[[], np.ndarray]


class WeightStore:
    """Lazily loaded arrays keyed by (layer name, role); each is loaded once."""

    def __init__(self) -> None:
        self._loaders: dict[tuple[str, str], Loader] = {}
        self._cache: dict[tuple[str, str], np.ndarray] = {}

    def register(self, layer: str, role: str, loader: Loader) -> None:
        self._loaders[(layer, role)] = loader

    def set(self, layer: str, role: str, array: np.ndarray) -> None:
        """Store an array directly (optimisers writing new weights)."""
        self._cache[(layer, role)] = array
        self._loaders[(layer, role)] = lambda: array

    def has(self, layer: str, role: str = "weight") -> bool:
        return (layer, role) in self._loaders

    def get(self, layer: str, role: str = "weight") -> np.ndarray:
        key = (layer, role)
        if key not in self._cache:
            if key not in self._loaders:
                raise ModelError(f"no {role!r} weights stored for layer {layer!r}")
            self._cache[key] = self._loaders[key]()
        return self._cache[key]

    def layers(self) -> list[str]:
        return sorted({layer for layer, _ in self._loaders})

    def loaded_count(self) -> int:
        """How many arrays have been converted so far (laziness is testable)."""
        return len(self._cache)
