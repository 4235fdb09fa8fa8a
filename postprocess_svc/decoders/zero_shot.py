"""zero-shot-classification: NLI logits of (text, hypothesis) pairs -> labels ranked, as
transformers' pipeline scores them."""

from __future__ import annotations

from typing import Any

import numpy as np


def entailment_id(id2label: dict[int, str]) -> int:
    """The pipeline's: the id of the first label starting with "entail", else -1 (the last)."""
    for index, label in sorted(id2label.items()):
        if label.lower().startswith("entail"):
            return index
    return -1


def decode_zero_shot(
    sequence: str, labels: list[str], logits: np.ndarray, entailment: int, multi_label: bool
) -> dict[str, Any]:
    """One record's [labels, NLI classes] logits -> {sequence, labels, scores}, best first.

    multi_label (or a single label): each label alone, softmax of entailment vs contradiction;
    else a softmax of the entailment logits across the labels.
    """
    logits = logits.astype(np.float32)[None]
    if multi_label or len(labels) == 1:
        contradiction = -1 if entailment == 0 else 0
        pair = logits[..., [contradiction, entailment]]
        scores = (np.exp(pair) / np.exp(pair).sum(-1, keepdims=True))[..., 1]
    else:
        entail = logits[..., entailment]
        scores = np.exp(entail) / np.exp(entail).sum(-1, keepdims=True)
    top = list(reversed(scores[0].argsort()))
    return {"sequence": sequence, "labels": [labels[i] for i in top], "scores": scores[0, top].tolist()}
