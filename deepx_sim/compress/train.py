"""Real data and models trained in-project, so the optimisers' accuracy is measured.

The data set is scikit-learn's handwritten digits (1,797 8x8 images, 10
classes; UCI "Optical Recognition of Handwritten Digits"), which ships inside
the package: no download.  Two models are trained on it with plain numpy
back-propagation and Adam, seeded, then cached as ``.npz``:

- ``speakerid_digits``: SpeakerID's shape (DXTK: two hidden layers of 1000)
  on 64 inputs and 10 classes: 64-1000-1000-10 with ReLU and dropout;
- ``cnn_digits``: a small CNN, conv 3x3 16 -> conv 3x3 32 -> max-pool ->
  fc 128 -> fc 10.

The networks keep Adam's state and the last gradients as training-only
state, like a checkpoint a training framework writes; parameter cleaning
drops it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import numpy as np

from deepx_sim.cache import cache_root
from deepx_sim.model.builder import GraphBuilder
from deepx_sim.model.execute import conv2d, im2col
from deepx_sim.model.layers import Layer, LayerKind, layers_in_order
from deepx_sim.model.weights import WeightStore

TRAINED_MODELS = ("speakerid_digits", "cnn_digits", "small_noisy_digits", "speakerid_augdigits",
                  "cnn_augdigits", "small_augdigits", "speakerid_mnist1d", "cnn_mnist1d", "small_mnist1d")


@dataclass(frozen=True)
class Dataset:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    # the source image of each row (an index into load_digits()), where rows share images
    groups_train: np.ndarray | None = None
    groups_test: np.ndarray | None = None


def digits(image: bool = False, seed: int = 0, test_share: float = 0.3, noise: float = 0.0,
           augment: bool = False) -> Dataset:
    """The digits split into train and test (stratified); pixels scaled to [0, 1].

    ``image``: (N, 1, 8, 8) for a CNN instead of (N, 64).  ``noise``: the standard
    deviation of Gaussian noise added to every pixel, train and test (a harder task).
    ``augment``: the same split of source images, each image then distorted into
    augment.TRAIN_VARIANTS (train) or augment.TEST_VARIANTS (test) variants (augment.py);
    ``groups_*`` name each row's source image."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from deepx_sim.compress import augment as aug

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    if noise and not augment:  # one draw over all images, before the split
        x = (x + noise * np.random.default_rng(seed + 1).standard_normal(x.shape)).astype(np.float32)
    ids_train, ids_test = train_test_split(np.arange(len(y)), test_size=test_share, random_state=seed,
                                           stratify=y)
    source = "sklearn.datasets.load_digits (UCI optdigits)"
    groups: dict[str, np.ndarray] = {"train": ids_train, "test": ids_test}
    parts: dict[str, np.ndarray] = {"train": x[ids_train], "test": x[ids_test]}
    if augment:
        counts = {"train": aug.TRAIN_VARIANTS, "test": aug.TEST_VARIANTS}
        for split, ids in list(groups.items()):
            images, local = aug.variants(parts[split].reshape(-1, 8, 8), counts[split], seed, split)
            parts[split], groups[split] = images.reshape(len(images), 64), ids[local]
        source += (f", augmented by source image ({aug.TRAIN_VARIANTS} train / {aug.TEST_VARIANTS} test "
                   "variants per image)")
    if noise and augment:  # one draw per split, over its variants in row order
        for split, tag in (("train", 1), ("test", 2)):
            rng = np.random.default_rng([seed + 1, tag])
            parts[split] = (parts[split] + noise * rng.standard_normal(parts[split].shape)).astype(np.float32)
    source += f" + N(0, {noise:g}) pixel noise" if noise else ""
    if image:
        parts = {k: v.reshape(-1, 1, 8, 8) for k, v in parts.items()}
    return Dataset(parts["train"], y[groups["train"]], parts["test"], y[groups["test"]], source,
                   groups["train"], groups["test"])


def mnist1d(image: bool = False, seed: int = 0) -> Dataset:
    """MNIST-1D (signals.py): independent rows, TRAIN_ROWS to train and TEST_ROWS to test.
    ``image``: each 64-sample signal folded into 8 rows of 8, (N, 1, 8, 8), for the CNN."""
    from deepx_sim.compress import signals

    rows = signals.mnist1d_rows(seed)
    x_train, x_test = rows["x_train"], rows["x_test"]
    if image:
        side = round(np.sqrt(x_train.shape[1]))
        x_train, x_test = x_train.reshape(-1, 1, side, side), x_test.reshape(-1, 1, side, side)
    source = f"MNIST-1D (Greydanus 2020; mnist1d package, seed {seed}, length {signals.SEQUENCE_LENGTH})"
    return Dataset(x_train, rows["y_train"], x_test, rows["y_test"], source)


def _cols(x: np.ndarray, lay: Layer) -> np.ndarray:
    """(B, C*kh*kw, OH*OW) patches of a convolution's input."""
    c = lay.conv
    assert c is not None
    out_hw = (lay.output_shape[2], lay.output_shape[3])
    return im2col(x, c.kernel, c.stride, c.pads, (1, 1), out_hw).reshape(
        x.shape[0], -1, out_hw[0] * out_hw[1]
    )


def col2im(cols: np.ndarray, x_shape: tuple[int, ...], lay: Layer) -> np.ndarray:
    """Adjoint of :func:`_cols`: scatter-add patch gradients back to the input."""
    c = lay.conv
    assert c is not None
    (kh, kw), (sh, sw), pad = c.kernel, c.stride, c.padding
    b, ch, h, w = x_shape
    oh, ow = lay.output_shape[2], lay.output_shape[3]
    cols = cols.reshape(b, ch, kh, kw, oh, ow)
    xp = np.zeros((b, ch, h + 2 * pad[0], w + 2 * pad[1]), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            xp[:, :, i : i + sh * oh : sh, j : j + sw * ow : sw] += cols[:, :, i, j]
    return xp[:, :, pad[0] : pad[0] + h, pad[1] : pad[1] + w]


def _forward_train(
    layers: list[Layer],
    params: dict[str, np.ndarray],
    x: np.ndarray,
    rng: np.random.Generator,
    dropout: float,
) -> tuple[np.ndarray, list[object]]:
    caches: list[object] = []
    for lay in layers:
        if lay.kind == LayerKind.FC:
            caches.append(x)
            x = x @ params[lay.name + "/weight"].T + params[lay.name + "/bias"]
        elif lay.kind == LayerKind.CONV:
            w = params[lay.name + "/weight"]
            assert lay.conv is not None
            caches.append((x.shape, _cols(x, lay)))
            x = conv2d(
                x,
                w,
                params[lay.name + "/bias"],
                lay.conv.stride,
                lay.conv.pads,
                (lay.output_shape[2], lay.output_shape[3]),
            )
        elif lay.kind == LayerKind.ACTIVATION:  # ReLU
            caches.append(x > 0)
            x = np.maximum(x, 0)
        elif lay.kind == LayerKind.POOL:  # max pooling with stride = kernel
            b, c, h, w_ = x.shape
            assert lay.pool is not None
            k = lay.pool.kernel[0]
            blocks = x.reshape(b, c, h // k, k, w_ // k, k)
            out = blocks.max(axis=(3, 5))
            caches.append((blocks == out[:, :, :, None, :, None], x.shape))
            x = out
        elif lay.kind == LayerKind.FLATTEN:
            caches.append(x.shape)
            x = x.reshape(x.shape[0], -1)
        elif lay.kind == LayerKind.DROPOUT:
            keep = (rng.random(x.shape) >= dropout) / (1 - dropout)
            caches.append(keep)
            x = x * keep
        elif lay.kind == LayerKind.SOFTMAX:
            caches.append(None)  # folded into the cross-entropy gradient
    return x, caches


def _backward(
    layers: list[Layer], params: dict[str, np.ndarray], caches: list[object], grad: np.ndarray
) -> dict[str, np.ndarray]:
    grads: dict[str, np.ndarray] = {}
    for lay, cache in zip(reversed(layers), reversed(caches), strict=True):
        if lay.kind == LayerKind.FC:
            grads[lay.name + "/weight"] = grad.T @ cache  # type: ignore[operator]
            grads[lay.name + "/bias"] = grad.sum(axis=0)
            grad = grad @ params[lay.name + "/weight"]
        elif lay.kind == LayerKind.CONV:
            x_shape, cols = cache  # type: ignore[misc]
            w = params[lay.name + "/weight"]
            n = w.shape[0]
            g = grad.reshape(grad.shape[0], n, -1)
            grads[lay.name + "/weight"] = np.einsum("bnp,bkp->nk", g, cols).reshape(w.shape)
            grads[lay.name + "/bias"] = g.sum(axis=(0, 2))
            grad = col2im(np.einsum("nk,bnp->bkp", w.reshape(n, -1), g), x_shape, lay)
        elif lay.kind == LayerKind.ACTIVATION:
            grad = grad * cache
        elif lay.kind == LayerKind.POOL:
            mask, shape = cache  # type: ignore[misc]
            grad = (mask * grad[:, :, :, None, :, None]).reshape(shape)
        elif lay.kind == LayerKind.FLATTEN:
            grad = grad.reshape(cache)  # type: ignore[arg-type]
        elif lay.kind == LayerKind.DROPOUT:
            grad = grad * cache
    return grads


def _weighted(graph: nx.DiGraph) -> list[Layer]:
    return [lay for lay in layers_in_order(graph) if lay.kind in (LayerKind.FC, LayerKind.CONV)]


def train(
    template: nx.DiGraph,
    data: Dataset,
    epochs: int,
    seed: int,
    lr: float = 1e-3,
    batch: int = 64,
    dropout: float = 0.2,
) -> nx.DiGraph:
    """Train ``template``'s weighted layers (from their initial weights) with Adam on cross-entropy;
    the trained graph keeps the last gradients and Adam's moments as training-only state."""
    rng = np.random.default_rng(seed)
    store: WeightStore = template.graph["weights"]
    layers = [lay for lay in layers_in_order(template) if lay.kind != LayerKind.INPUT]
    params = {
        f"{lay.name}/{role}": store.get(lay.name, role).copy()
        for lay in _weighted(template)
        for role in ("weight", "bias")
    }
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(p) for k, p in params.items()}
    grads: dict[str, np.ndarray] = {}
    beta1, beta2, eps, step = 0.9, 0.999, 1e-8, 0
    n = len(data.x_train)
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, batch):
            idx = order[start : start + batch]
            # a final softmax passes logits through here; its gradient is the cross-entropy's
            logits, caches = _forward_train(layers, params, data.x_train[idx], rng, dropout)
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            p = e / e.sum(axis=1, keepdims=True)
            p[np.arange(len(idx)), data.y_train[idx]] -= 1
            grads = _backward(layers, params, caches, p / len(idx))
            step += 1
            for k, g in grads.items():
                m[k] = beta1 * m[k] + (1 - beta1) * g
                v[k] = beta2 * v[k] + (1 - beta2) * g * g
                m_hat = m[k] / (1 - beta1**step)
                v_hat = v[k] / (1 - beta2**step)
                params[k] -= lr * m_hat / (np.sqrt(v_hat) + eps)
    state = {f"{k}/grad": g.astype(np.float32) for k, g in grads.items()}
    state.update({f"{k}/adam_m": a for k, a in m.items()})
    state.update({f"{k}/adam_v": a for k, a in v.items()})
    return _with_arrays(template, params, state)


def _with_arrays(
    template: nx.DiGraph, params: dict[str, np.ndarray], state: dict[str, np.ndarray]
) -> nx.DiGraph:
    graph = template.copy()
    store = WeightStore()
    for key, array in params.items():
        layer, role = key.split("/")
        store.set(layer, role, np.asarray(array, dtype=np.float32))
    store.training_state = dict(state)
    graph.graph["weights"] = store
    return graph


def _he(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def speakerid_template(seed: int, inputs: int = 64, hidden: int = 1000, classes: int = 10,
                       name: str = "speakerid_digits") -> nx.DiGraph:
    b = GraphBuilder(name, (1, inputs), source="trained in-project")
    for i in (1, 2):
        b.fc(hidden, name=f"fc{i}")
        b.relu(name=f"relu{i}")
        b.dropout(name=f"drop{i}")
    b.fc(classes, name="fc3")
    b.softmax(name="prob")
    return _initialised(b.build(), seed)


def cnn_template(seed: int, input_shape: tuple[int, ...] = (1, 1, 8, 8), channels: tuple[int, int] = (16, 32),
                 hidden: int = 128, name: str = "cnn_digits") -> nx.DiGraph:
    """conv 3x3 -> relu -> conv 3x3 -> relu -> max-pool 2 -> fc -> relu -> dropout -> fc 10 -> softmax."""
    b = GraphBuilder(name, input_shape, source="trained in-project")
    b.conv(channels[0], 3, padding=1, name="conv1")
    b.relu(name="relu1")
    b.conv(channels[1], 3, padding=1, name="conv2")
    b.relu(name="relu2")
    b.pool(2, 2, name="pool")
    b.flatten(name="flat")
    b.fc(hidden, name="fc1")
    b.relu(name="relu3")
    b.dropout(name="drop")
    b.fc(10, name="fc2")
    b.softmax(name="prob")
    return _initialised(b.build(), seed)


def _initialised(graph: nx.DiGraph, seed: int) -> nx.DiGraph:
    """He-initialised weights and zero biases, in layer order from one seeded generator."""
    rng = np.random.default_rng(seed)
    params = {}
    for lay in _weighted(graph):
        if lay.fc is not None:
            shape: tuple[int, ...] = (lay.fc.m, lay.fc.n)
        else:
            assert lay.conv is not None
            shape = (lay.conv.c_out, lay.conv.c_in, *lay.conv.kernel)
        params[f"{lay.name}/weight"] = _he(rng, shape, int(np.prod(shape[1:])))
        params[f"{lay.name}/bias"] = np.zeros(shape[0], np.float32)
    return _with_arrays(graph, params, {})


def _three(data: str, small_epochs: int, **flags: object) -> dict[str, dict[str, object]]:
    """The DNN, the CNN and the 64-32-32-10 harder task on one data set (``{kind}_{data}``)."""
    return {
        f"speakerid_{data}": {"template": lambda seed: speakerid_template(seed, name=f"speakerid_{data}"),
                              "image": False, "epochs": 8, "lr": 1e-3, **flags},
        f"cnn_{data}": {"template": lambda seed: cnn_template(seed, name=f"cnn_{data}"),
                        "image": True, "epochs": 8, "lr": 2e-3, **flags},
        f"small_{data}": {"template": lambda seed: speakerid_template(seed, hidden=32, name=f"small_{data}"),
                          "image": False, "epochs": small_epochs, "lr": 3e-3, **flags},
    }


_RECIPES = {
    "speakerid_digits": {"template": speakerid_template, "image": False, "epochs": 25, "lr": 1e-3},
    "cnn_digits": {"template": cnn_template, "image": True, "epochs": 20, "lr": 2e-3},
    # the harder task: 32 hidden units and pixel noise of 0.35 leave little redundancy
    "small_noisy_digits": {"template": lambda seed: speakerid_template(seed, hidden=32,
                                                                       name="small_noisy_digits"),
                           "image": False, "epochs": 40, "lr": 3e-3, "noise": 0.35},
    # the same three on augmented digits (augment.py): 10x the training rows, so fewer epochs;
    # there the distortions alone leave 32 hidden units little redundancy
    **_three("augdigits", 40, augment=True),
    # and on MNIST-1D (signals.py): independent rows, as many as a held-apart test needs
    **_three("mnist1d", 20, mnist1d=True),
}


def _augment_key() -> dict[str, float]:
    """The distortion settings a model trained on augmented digits depends on."""
    from deepx_sim.compress import augment as aug

    return {k: getattr(aug, k) for k in ("ROTATION_DEG", "SCALE", "SHIFT_PX", "ELASTIC_SIGMA_PX",
                                         "ELASTIC_ALPHA", "TRAIN_VARIANTS", "TEST_VARIANTS")}


def cache_dir() -> Path:
    return cache_root() / "trained"


def trained_model(name: str, seed: int = 0) -> tuple[nx.DiGraph, Dataset]:
    """A trained model (layer graph with weights) and its data, from the cache when it is there."""
    from deepx_sim.errors import ModelError

    if name not in _RECIPES:
        raise ModelError(f"no trained model {name!r}; choose from {', '.join(TRAINED_MODELS)}")
    recipe = _RECIPES[name]
    augment = bool(recipe.get("augment", False))
    if recipe.get("mnist1d"):
        data = mnist1d(image=bool(recipe["image"]), seed=seed)
    else:
        data = digits(image=bool(recipe["image"]), seed=seed, noise=float(recipe.get("noise", 0.0)),  # type: ignore[arg-type]
                      augment=augment)
    key = hashlib.sha1(
        json.dumps(
            {"name": name, "seed": seed, "epochs": recipe["epochs"], "lr": recipe["lr"], "version": 2,
             **({"noise": recipe["noise"]} if "noise" in recipe else {}),
             **({"augment": _augment_key()} if augment else {}),
             **({"mnist1d": data.source, "rows": [len(data.y_train), len(data.y_test)]}
                if recipe.get("mnist1d") else {})}
        ).encode()
    ).hexdigest()[:12]
    path = cache_dir() / f"{name}-{key}.npz"
    template = recipe["template"](seed)  # type: ignore[operator]
    if path.is_file():
        stored = np.load(path)
        params = {k: stored[k] for k in stored.files if not k.startswith("state:")}
        state = {k.removeprefix("state:"): stored[k] for k in stored.files if k.startswith("state:")}
        return _with_arrays(template, params, state), data
    graph = train(
        template,
        data,
        epochs=int(recipe["epochs"]),
        seed=seed,  # type: ignore[call-overload]
        lr=float(recipe["lr"]),
    )  # type: ignore[arg-type]
    store: WeightStore = graph.graph["weights"]
    arrays = {
        f"{lay.name}/{role}": store.get(lay.name, role)
        for lay in _weighted(graph)
        for role in ("weight", "bias")
    }
    arrays.update({f"state:{k}": a for k, a in store.training_state.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return graph, data
