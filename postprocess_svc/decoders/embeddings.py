"""feature-extraction: hidden states -> token embeddings or one pooled vector."""

from __future__ import annotations

import numpy as np


def decode_embedding(hidden: np.ndarray, mask: np.ndarray, pooling: str, normalize: bool) -> np.ndarray:
    """One record's [T, H] hidden states (padded) and [T] attention mask -> float32 array.

    pooling "none" gives [tokens, H] (the pipeline's output for this record), "mean" the
    mask-weighted mean (sentence-transformers' mean pooling), "cls" the first token. normalize
    divides by the L2 norm (torch.nn.functional.normalize's eps=1e-12).
    """
    tokens = hidden[mask.astype(bool)].astype(np.float32)
    if pooling == "mean":
        out = tokens.sum(axis=0) / max(float(len(tokens)), 1e-9)
    elif pooling == "cls":
        out = tokens[0]
    else:
        out = tokens
    if normalize:
        norm = np.linalg.norm(out, axis=-1, keepdims=True)
        out = out / np.maximum(norm, 1e-12)
    return out.astype(np.float32)
