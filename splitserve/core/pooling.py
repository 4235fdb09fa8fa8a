"""Pooling where the tokens are: the model tier pools (and normalizes) a feature-extraction
model's hidden states when a request asks for it, so one vector per row travels instead of every
token's. The request says so in its OIP parameters (`pooling`: one of `POOLINGS`, `normalize`);
the answer is the `pooled` output, float32 [rows, width]. One function computes it wherever it
runs (the model tier, the in-process pipeline, a postprocess tier given token vectors).

A bundle exported from a sentence-transformers stack may carry its `Head`: the stack's modules
after its Pooling (Dense layers, whose weights the model tier reads from `onnx/dense.npz`, and a
final Normalize), applied to every pooled vector as `SentenceTransformer.encode` applies them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from splitserve.core.errors import BundleError, InvalidInput

POOLED = "pooled"
# sentence-transformers' pooling modes (its Pooling module's names), computed as it computes them.
POOLINGS = ("mean", "cls", "max", "lasttoken", "mean_sqrt_len_tokens", "weightedmean")
DENSE_FILE = "dense.npz"  # in the bundle's onnx/ artifact: weight_<i> [out, in], bias_<i> [out] if any
ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda x: x,
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
}


@dataclass(frozen=True)
class Dense:
    weight: np.ndarray  # float32 [out, in]
    bias: np.ndarray | None  # float32 [out]
    activation: str  # a key of ACTIVATIONS

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = x @ self.weight.T
        if self.bias is not None:
            y = y + self.bias
        return ACTIVATIONS[self.activation](y).astype(np.float32)


@dataclass(frozen=True)
class Head:
    """What a sentence-transformers stack does after its Pooling: Dense layers, then Normalize."""

    dense: tuple[Dense, ...] = ()
    normalize: bool = False

    def __call__(self, pooled: np.ndarray) -> np.ndarray:
        for layer in self.dense:
            pooled = layer(pooled)
        return _unit(pooled) if self.normalize else pooled


def read_head(head: Mapping[str, Any] | None, onnx_dir: Path | None) -> Head | None:
    """The bundle's head (serving.json's `head`) with its Dense weights from `onnx_dir`; None: none.
    Without `onnx_dir` (a tier that holds no model files) a head with Dense layers is refused."""
    if not head:
        return None
    layers = head.get("dense") or []
    if layers and onnx_dir is None:
        raise BundleError("this bundle's Dense layers run where its onnx/ artifact is (the model tier)")
    dense: list[Dense] = []
    if layers:
        assert onnx_dir is not None
        with np.load(onnx_dir / DENSE_FILE, allow_pickle=False) as arrays:
            for i, layer in enumerate(layers):
                bias = arrays[f"bias_{i}"].astype(np.float32) if f"bias_{i}" in arrays else None
                dense.append(Dense(arrays[f"weight_{i}"].astype(np.float32), bias, str(layer["activation"])))
    return Head(tuple(dense), bool(head.get("normalize", False)))


def pool(hidden: np.ndarray, mask: np.ndarray, pooling: str, normalize: bool, head: Head | None = None) -> np.ndarray:
    """[rows, tokens, hidden] (padded, either side) and the [rows, tokens] attention mask -> float32
    [rows, width], as sentence-transformers' Pooling computes each mode: the mask-weighted mean
    (mean), the first real token (cls), the largest value of the real tokens (max), the last real
    token (lasttoken: the mask's last 1, whichever side the padding is), the sum over the square
    root of the length (mean_sqrt_len_tokens), the mean weighted by position 1..n (weightedmean); then the
    head (Dense layers, Normalize); normalize divides by the L2 norm (torch's eps=1e-12)."""
    hidden = hidden.astype(np.float32, copy=False)
    mask = mask[:, : hidden.shape[1]]
    weights = mask[:, :, None].astype(np.float32)
    rows = np.arange(hidden.shape[0])
    first = np.argmax(mask, axis=1)  # the first real token (left padding: after the pads)
    if pooling == "cls":
        out = hidden[rows, first]
    elif pooling == "max":
        out = np.where(weights > 0, hidden, np.float32(-np.inf)).max(axis=1)
    elif pooling == "lasttoken":
        last = mask.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1)
        out = (hidden * weights)[rows, last]
    elif pooling == "weightedmean":  # positions 1..n from the first real token
        positions = np.arange(1, hidden.shape[1] + 1, dtype=np.float32)[None, :] - first[:, None]
        weights = weights * positions[:, :, None]
        out = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    else:
        total = (hidden * weights).sum(axis=1)
        count = np.maximum(weights.sum(axis=1), 1e-9)
        out = total / (np.sqrt(count) if pooling == "mean_sqrt_len_tokens" else count)
    if head is not None:
        out = head(out)
    return (_unit(out) if normalize else out).astype(np.float32)


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def pooled_outputs(
    outputs: dict[str, np.ndarray],
    mask: np.ndarray | None,
    values: Mapping[str, Any],
    main: str,
    shape: list[int],
    head: Head | None = None,
) -> dict[str, np.ndarray]:
    """The model's outputs for one request, pooled if its parameters ask (`main`: the hidden states
    output, of `shape` [rows, tokens, hidden] as ModelMetadata reports it), through the bundle's head."""
    asked = from_oip(values)
    if asked is None:
        return outputs
    if len(shape) != 3 or shape[1] != -1:
        raise InvalidInput(f"parameter 'pooling': output {main!r} of shape {shape} has no token vectors to pool")
    hidden = outputs[main]
    return {POOLED: pool(hidden, np.ones(hidden.shape[:2]) if mask is None else mask, *asked, head=head)}


def from_oip(values: Mapping[str, Any]) -> tuple[str, bool] | None:
    """A request's pooling (pooling, normalize) from its OIP parameters, checked; None: none asked."""
    unknown = sorted(set(values) - {"pooling", "normalize"})
    if unknown:
        raise InvalidInput(f"unknown parameter(s) {unknown}; this model takes 'pooling' and 'normalize'")
    if "pooling" not in values:
        if "normalize" in values:
            raise InvalidInput(f"parameter 'normalize' needs 'pooling' (one of {list(POOLINGS)})")
        return None
    pooling, normalize = values["pooling"], values.get("normalize", False)
    if pooling not in POOLINGS:
        raise InvalidInput(f"parameter 'pooling': expected one of {list(POOLINGS)}, got {pooling!r}")
    if not isinstance(normalize, bool):
        raise InvalidInput(f"parameter 'normalize': expected bool, got {normalize!r}")
    return pooling, normalize
