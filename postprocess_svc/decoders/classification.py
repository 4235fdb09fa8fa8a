"""text-classification: logits -> labels with scores, as transformers' pipeline computes them."""

from __future__ import annotations

import numpy as np


def softmax(x: np.ndarray) -> np.ndarray:
    shifted = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def default_function(problem_type: str | None, num_labels: int) -> str:
    """The pipeline's choice when `function_to_apply` is not given."""
    if problem_type == "multi_label_classification" or num_labels == 1:
        return "sigmoid"
    return "softmax"


def decode_labels(
    logits: np.ndarray,
    id2label: dict[int, str],
    function_to_apply: str,
    top_k: int | None,
) -> list[dict]:
    """One record's [num_labels] logits -> [{label, score}] sorted by score, at most top_k."""
    logits = logits.astype(np.float32)
    if function_to_apply == "sigmoid":
        scores = sigmoid(logits)
    elif function_to_apply == "softmax":
        scores = softmax(logits)
    else:
        scores = logits
    ranked: list[dict] = sorted(
        ({"label": id2label[i], "score": float(s)} for i, s in enumerate(scores)),
        key=lambda d: float(d["score"]),
        reverse=True,
    )
    return ranked if top_k is None else ranked[:top_k]
