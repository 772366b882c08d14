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

import numpy as np

from deepx_sim.compress.network import Network, Op, conv2d, dense, im2col

TRAINED_MODELS = ("speakerid_digits", "cnn_digits")


@dataclass(frozen=True)
class Dataset:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str


def digits(image: bool = False, seed: int = 0, test_share: float = 0.3) -> Dataset:
    """The digits split into train and test (stratified); pixels scaled to [0, 1].

    ``image``: (N, 1, 8, 8) for a CNN instead of (N, 64)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=test_share, random_state=seed,
                                                        stratify=y)
    if image:
        x_train, x_test = x_train.reshape(-1, 1, 8, 8), x_test.reshape(-1, 1, 8, 8)
    return Dataset(x_train, y_train, x_test, y_test, "sklearn.datasets.load_digits (UCI optdigits)")


def col2im(cols: np.ndarray, x_shape: tuple[int, ...], kh: int, kw: int, stride: tuple[int, int],
           pad: tuple[int, int]) -> np.ndarray:
    """Adjoint of :func:`im2col`: scatter-add patch gradients back to the input."""
    b, c, h, w = x_shape
    oh = (h + 2 * pad[0] - kh) // stride[0] + 1
    ow = (w + 2 * pad[1] - kw) // stride[1] + 1
    cols = cols.reshape(b, c, kh, kw, oh, ow)
    xp = np.zeros((b, c, h + 2 * pad[0], w + 2 * pad[1]), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            xp[:, :, i:i + stride[0] * oh:stride[0], j:j + stride[1] * ow:stride[1]] += cols[:, :, i, j]
    return xp[:, :, pad[0]:pad[0] + h, pad[1]:pad[1] + w]


def _forward_train(ops: list[Op], params: dict[str, np.ndarray], x: np.ndarray, rng: np.random.Generator,
                   dropout: float) -> tuple[np.ndarray, list[object]]:
    caches: list[object] = []
    for op in ops:
        if op.kind == "dense":
            caches.append(x)
            x = x @ params[op.name + "/weight"].T + params[op.name + "/bias"]
        elif op.kind == "conv":
            w = params[op.name + "/weight"]
            caches.append((x.shape, im2col(x, w.shape[2], w.shape[3], op.stride, op.pad)))
            x = conv2d(x, w, params[op.name + "/bias"], op.stride, op.pad)
        elif op.kind == "relu":
            caches.append(x > 0)
            x = np.maximum(x, 0)
        elif op.kind == "maxpool":
            b, c, h, w_ = x.shape
            k = op.kernel[0]
            blocks = x.reshape(b, c, h // k, k, w_ // k, k)
            out = blocks.max(axis=(3, 5))
            mask = blocks == out[:, :, :, None, :, None]
            caches.append((mask, x.shape))
            x = out
        elif op.kind == "flatten":
            caches.append(x.shape)
            x = x.reshape(x.shape[0], -1)
        elif op.kind == "dropout":
            keep = (rng.random(x.shape) >= dropout) / (1 - dropout)
            caches.append(keep)
            x = x * keep
        elif op.kind == "softmax":
            caches.append(None)  # folded into the cross-entropy gradient
    return x, caches


def _backward(ops: list[Op], params: dict[str, np.ndarray], caches: list[object],
              grad: np.ndarray) -> dict[str, np.ndarray]:
    grads: dict[str, np.ndarray] = {}
    for op, cache in zip(reversed(ops), reversed(caches), strict=True):
        if op.kind == "dense":
            x = cache
            grads[op.name + "/weight"] = grad.T @ x  # type: ignore[operator]
            grads[op.name + "/bias"] = grad.sum(axis=0)
            grad = grad @ params[op.name + "/weight"]
        elif op.kind == "conv":
            x_shape, cols = cache  # type: ignore[misc]
            w = params[op.name + "/weight"]
            n = w.shape[0]
            g = grad.reshape(grad.shape[0], n, -1)
            grads[op.name + "/weight"] = np.einsum("bnp,bkp->nk", g, cols).reshape(w.shape)
            grads[op.name + "/bias"] = g.sum(axis=(0, 2))
            dcols = np.einsum("nk,bnp->bkp", w.reshape(n, -1), g)
            grad = col2im(dcols, x_shape, w.shape[2], w.shape[3], op.stride, op.pad)
        elif op.kind == "relu":
            grad = grad * cache
        elif op.kind == "maxpool":
            mask, shape = cache  # type: ignore[misc]
            grad = (mask * grad[:, :, :, None, :, None]).reshape(shape)
        elif op.kind == "flatten":
            grad = grad.reshape(cache)  # type: ignore[arg-type]
        elif op.kind == "dropout":
            grad = grad * cache
    return grads


def train(template: Network, data: Dataset, epochs: int, seed: int, lr: float = 1e-3, batch: int = 64,
          dropout: float = 0.2) -> Network:
    """Train ``template``'s weighted ops (their initial weights) with Adam on cross-entropy."""
    rng = np.random.default_rng(seed)
    params: dict[str, np.ndarray] = {}
    for op in template.weighted_ops():
        assert op.weight is not None and op.bias is not None
        params[op.name + "/weight"] = op.weight.astype(np.float32)
        params[op.name + "/bias"] = op.bias.astype(np.float32)
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(p) for k, p in params.items()}
    grads: dict[str, np.ndarray] = {}
    beta1, beta2, eps, step = 0.9, 0.999, 1e-8, 0
    n = len(data.x_train)
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            # a final softmax op passes logits through here; its gradient is the cross-entropy's
            logits, caches = _forward_train(template.ops, params, data.x_train[idx], rng, dropout)
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            p = e / e.sum(axis=1, keepdims=True)
            p[np.arange(len(idx)), data.y_train[idx]] -= 1
            grads = _backward(template.ops, params, caches, p / len(idx))
            step += 1
            for k, g in grads.items():
                m[k] = beta1 * m[k] + (1 - beta1) * g
                v[k] = beta2 * v[k] + (1 - beta2) * g * g
                m_hat = m[k] / (1 - beta1 ** step)
                v_hat = v[k] / (1 - beta2 ** step)
                params[k] -= lr * m_hat / (np.sqrt(v_hat) + eps)
    ops = [Op(op.name, op.kind, weight=params[op.name + "/weight"], bias=params[op.name + "/bias"],
              stride=op.stride, pad=op.pad, kernel=op.kernel) if op.has_weights else op
           for op in template.ops]
    state = {f"{k}/grad": g.astype(np.float32) for k, g in grads.items()}
    state.update({f"{k}/adam_m": a for k, a in m.items()})
    state.update({f"{k}/adam_v": a for k, a in v.items()})
    return Network(template.name, template.input_shape, ops, state)


def _he(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def speakerid_template(seed: int, inputs: int = 64, hidden: int = 1000, classes: int = 10) -> Network:
    rng = np.random.default_rng(seed)
    z = np.zeros
    return Network("speakerid_digits", (inputs,), [
        dense("fc1", _he(rng, (hidden, inputs), inputs), z(hidden, np.float32)), Op("relu1", "relu"),
        Op("drop1", "dropout"),
        dense("fc2", _he(rng, (hidden, hidden), hidden), z(hidden, np.float32)), Op("relu2", "relu"),
        Op("drop2", "dropout"),
        dense("fc3", _he(rng, (classes, hidden), hidden), z(classes, np.float32)), Op("prob", "softmax"),
    ])


def cnn_template(seed: int) -> Network:
    rng = np.random.default_rng(seed)
    z = np.zeros
    return Network("cnn_digits", (1, 8, 8), [
        Op("conv1", "conv", weight=_he(rng, (16, 1, 3, 3), 9), bias=z(16, np.float32), pad=(1, 1)),
        Op("relu1", "relu"),
        Op("conv2", "conv", weight=_he(rng, (32, 16, 3, 3), 144), bias=z(32, np.float32), pad=(1, 1)),
        Op("relu2", "relu"),
        Op("pool", "maxpool", kernel=(2, 2), stride=(2, 2)),
        Op("flat", "flatten"),
        dense("fc1", _he(rng, (128, 512), 512), z(128, np.float32)), Op("relu3", "relu"),
        Op("drop", "dropout"),
        dense("fc2", _he(rng, (10, 128), 128), z(10, np.float32)), Op("prob", "softmax"),
    ])


_RECIPES = {
    "speakerid_digits": {"template": speakerid_template, "image": False, "epochs": 25, "lr": 1e-3},
    "cnn_digits": {"template": cnn_template, "image": True, "epochs": 20, "lr": 2e-3},
}


def cache_dir() -> Path:
    root = os.environ.get("DEEPX_SIM_CACHE") or Path.home() / ".cache" / "deepx_sim"
    return Path(root) / "trained"


def trained_model(name: str, seed: int = 0) -> tuple[Network, Dataset]:
    """A trained model and its data, from the cache when it is there."""
    from deepx_sim.errors import ModelError

    if name not in _RECIPES:
        raise ModelError(f"no trained model {name!r}; choose from {', '.join(TRAINED_MODELS)}")
    recipe = _RECIPES[name]
    data = digits(image=bool(recipe["image"]), seed=seed)
    key = hashlib.sha1(json.dumps({"name": name, "seed": seed, "epochs": recipe["epochs"],
                                   "lr": recipe["lr"], "version": 1}).encode()).hexdigest()[:12]
    path = cache_dir() / f"{name}-{key}.npz"
    template = recipe["template"](seed)  # type: ignore[operator]
    if path.is_file():
        stored = np.load(path)
        ops = [Op(op.name, op.kind, weight=stored[op.name + "/weight"], bias=stored[op.name + "/bias"],
                  stride=op.stride, pad=op.pad, kernel=op.kernel) if op.has_weights else op
               for op in template.ops]
        state = {k.removeprefix("state:"): stored[k] for k in stored.files if k.startswith("state:")}
        return Network(name, template.input_shape, ops, state), data
    net = train(template, data, epochs=int(recipe["epochs"]), seed=seed,  # type: ignore[call-overload]
                lr=float(recipe["lr"]))  # type: ignore[arg-type]
    arrays = {f"{op.name}/{role}": getattr(op, role)
              for op in net.weighted_ops() for role in ("weight", "bias")}
    arrays.update({f"state:{k}": a for k, a in net.training_state.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return net, data
