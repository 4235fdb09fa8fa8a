"""The correctness oracle: what `transformers.pipeline` on PyTorch returns for the same model
and input, and comparisons of splitserve results against it."""

from __future__ import annotations

from typing import Any

import numpy as np

SCORE_TOL = 1e-4
EMBED_TOL = 1e-4

LONG_TEXT = " ".join(
    f"Angela Merkel met Emmanuel Macron in Berlin on day {i}, then flew to São Paulo with Ørsted staff."
    for i in range(45)
)
TEXTS = [
    "Abraham Lincoln cut down a cherry tree",
    "Élodie vit à Zürich et mange des crêpes",
    "東京タワーに行きました。北京欢迎你",
    "I ❤️ Paris 🗼 😀",
    "multiple    spaces   and\ttabs\nnewlines",
    "Elon Musk owns Tesla",
    LONG_TEXT,  # longer than every model's max length: truncated
]

PARAMS = {
    "feature-extraction": [{}, {"pooling": "mean", "normalize": True}, {"pooling": "cls"}],
    "text-classification": [{}, {"top_k": None}, {"top_k": 2, "function_to_apply": "sigmoid"}],
    "token-classification": [
        {},
        {"aggregation_strategy": "simple"},
        {"aggregation_strategy": "first"},
        {"aggregation_strategy": "average"},
        {"aggregation_strategy": "max"},
        {"aggregation_strategy": "simple", "ignore_labels": []},
    ],
}


def pipeline_output(task: str, pipe: Any, text: str, params: dict[str, Any]) -> Any:
    """The pipeline's output for one text, in splitserve's result shape."""
    if task == "feature-extraction":
        tokens = np.asarray(pipe(text, truncation=True)[0], dtype=np.float32)
        pooling = params.get("pooling", "none")
        out = tokens.mean(axis=0) if pooling == "mean" else tokens[0] if pooling == "cls" else tokens
        if params.get("normalize"):
            out = out / max(float(np.linalg.norm(out)), 1e-12)
        return {"embedding": out}
    if task == "text-classification":
        kwargs = {k: v for k, v in params.items()}
        labels = pipe(text, truncation=True, **({"top_k": 1} | kwargs))
        return {"labels": labels}
    if task == "token-classification":
        return {"entities": pipe(text, **params)}
    raise ValueError(task)


def assert_matches(task: str, expected: dict[str, Any], got: dict[str, Any], where: str) -> None:
    if task == "feature-extraction":
        exp, res = np.asarray(expected["embedding"]), np.asarray(got["embedding"], dtype=np.float32)
        assert exp.shape == res.shape, f"{where}: shape {res.shape} != pipeline {exp.shape}"
        diff = float(np.abs(exp - res).max())
        assert diff <= EMBED_TOL, f"{where}: embeddings differ by {diff}"
    elif task == "text-classification":
        exp, res = expected["labels"], got["labels"]
        assert [d["label"] for d in res] == [d["label"] for d in exp], f"{where}: {res} != {exp}"
        for e, r in zip(exp, res, strict=True):
            assert abs(e["score"] - r["score"]) <= SCORE_TOL, f"{where}: {res} != {exp}"
    else:
        exp, res = expected["entities"], got["entities"]
        assert len(exp) == len(res), f"{where}: {len(res)} entities, pipeline {len(exp)}:\n{res}\n{exp}"
        for e, r in zip(exp, res, strict=True):
            for key in e:
                if key == "score":
                    assert abs(float(e[key]) - r[key]) <= SCORE_TOL, f"{where}: {r} != {e}"
                else:
                    assert r[key] == e[key], f"{where}: {key} {r[key]!r} != {e[key]!r} ({r} vs {e})"
            assert set(r) == set(e), f"{where}: keys {sorted(r)} != {sorted(e)}"
