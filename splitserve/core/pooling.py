"""Pooling where the tokens are: the model tier pools (and normalizes) a feature-extraction
model's hidden states when a request asks for it, so one vector per row travels instead of every
token's. The request says so in its OIP parameters (`pooling`: "mean" or "cls", `normalize`);
the answer is the `pooled` output, float32 [rows, hidden]. One function computes it wherever it
runs (the model tier, the in-process pipeline, a postprocess tier given token vectors)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from splitserve.core.errors import InvalidInput

POOLED = "pooled"
POOLINGS = ("mean", "cls")


def pool(hidden: np.ndarray, mask: np.ndarray, pooling: str, normalize: bool) -> np.ndarray:
    """[rows, tokens, hidden] (padded) and the [rows, tokens] attention mask -> float32
    [rows, hidden]: the mask-weighted mean (sentence-transformers' mean pooling) or the first
    token; normalize divides by the L2 norm (torch.nn.functional.normalize's eps=1e-12)."""
    hidden = hidden.astype(np.float32, copy=False)
    if pooling == "cls":
        out = hidden[:, 0]
    else:
        weights = mask[:, : hidden.shape[1], None].astype(np.float32)
        out = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    if normalize:
        out = out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
    return out.astype(np.float32)


def pooled_outputs(
    outputs: dict[str, np.ndarray], mask: np.ndarray | None, values: Mapping[str, Any], main: str, shape: list[int]
) -> dict[str, np.ndarray]:
    """The model's outputs for one request, pooled if its parameters ask (`main`: the hidden states
    output, of `shape` [rows, tokens, hidden] as ModelMetadata reports it)."""
    asked = from_oip(values)
    if asked is None:
        return outputs
    if len(shape) != 3 or shape[1] != -1:
        raise InvalidInput(f"parameter 'pooling': output {main!r} of shape {shape} has no token vectors to pool")
    hidden = outputs[main]
    return {POOLED: pool(hidden, np.ones(hidden.shape[:2]) if mask is None else mask, *asked)}


def from_oip(values: Mapping[str, Any]) -> tuple[str, bool] | None:
    """A request's pooling (pooling, normalize) from its OIP parameters, checked; None: none asked."""
    unknown = sorted(set(values) - {"pooling", "normalize"})
    if unknown:
        raise InvalidInput(f"unknown parameter(s) {unknown}; this model takes 'pooling' and 'normalize'")
    if "pooling" not in values:
        if "normalize" in values:
            raise InvalidInput("parameter 'normalize' needs 'pooling' (mean or cls)")
        return None
    pooling, normalize = values["pooling"], values.get("normalize", False)
    if pooling not in POOLINGS:
        raise InvalidInput(f"parameter 'pooling': expected one of {list(POOLINGS)}, got {pooling!r}")
    if not isinstance(normalize, bool):
        raise InvalidInput(f"parameter 'normalize': expected bool, got {normalize!r}")
    return pooling, normalize
