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


# The tasks where one record can make several model rows, or carries more than a text.
# Fill-mask texts hold "{mask}", replaced by the tokenizer's mask token (`fill_mask_texts`).
FILL_MASK_TEMPLATES = [
    "Abraham Lincoln cut down a {mask} tree",
    "Élodie vit à {mask} et mange des crêpes",
    "東京{mask}に行きました。北京欢迎你",
    "I ❤️ {mask} 🗼 😀",
    "multiple    spaces   and\t{mask}\nnewlines",
    "Angela {mask} met Emmanuel Macron in {mask}.",  # two masks: a list per mask
    "{mask}",
]
QA_RECORDS = [
    {"question": "Who works for NASA?", "context": "Angela Merkel works for NASA in Paris."},
    {"question": "Où vit Élodie ?", "context": "Élodie vit à Zürich et mange des crêpes à São Paulo."},
    {"question": "東京タワーはどこ？", "context": "東京タワーに行きました。北京欢迎你 😀"},
    {"question": "What do I love?", "context": "I ❤️ Paris 🗼 😀 and naïve café crème, multiple    spaces."},
    # Longer than every model's max length (BERT 384 by default, RoBERTa 64): windows with stride.
    {"question": "Where did they fly to?", "context": LONG_TEXT},
]
ZERO_SHOT_RECORDS = [
    {"text": "Angela Merkel met Emmanuel Macron in Berlin", "candidate_labels": ["politics", "sports", "travel"]},
    {
        "text": "Élodie vit à Zürich et mange des crêpes",
        "candidate_labels": ["food", "cuisine française", "voyage", "sport"],
    },
    {"text": "東京タワーに行きました。北京欢迎你", "candidate_labels": ["旅行", "travel"]},
    {"text": "I ❤️ Paris 🗼 😀", "candidate_labels": ["love", "hate"]},
    {"text": "Florida has nice beaches", "candidate_labels": ["beach"]},  # one label: entailment vs contradiction
    {"text": LONG_TEXT, "candidate_labels": ["news", "politics", "weather"]},  # truncated, hypothesis kept
]

MORE_PARAMS: dict[str, list[dict[str, Any]]] = {
    "fill-mask": [
        {},
        {"top_k": 2},
        # In the vocabulary or not (then its first token, as the pipeline does); fewer than top_k.
        {"targets": ["paris", "Berlin", " tree", "🗼", "crêpes"], "top_k": 10},
    ],
    "question-answering": [
        {},
        {"top_k": 3},
        {"top_k": 2, "max_answer_len": 4, "handle_impossible_answer": True},
        {"max_seq_len": 48, "doc_stride": 16, "top_k": 2, "max_question_len": 32},
        {"align_to_words": False, "top_k": 2},
    ],
    "zero-shot-classification": [
        {},
        {"multi_label": True},
        {"hypothesis_template": "Das Thema ist {}."},
    ],
}


def fill_mask_texts(mask_token: str) -> list[str]:
    return [t.replace("{mask}", mask_token) for t in FILL_MASK_TEMPLATES]


def more_inputs(task: str, tokenizer: Any) -> list[dict[str, Any]]:
    """The records (without ids) each of the more tasks is checked on."""
    if task == "fill-mask":
        return [{"text": t} for t in fill_mask_texts(tokenizer.mask_token)]
    if task == "question-answering":
        return QA_RECORDS
    if task == "zero-shot-classification":
        return ZERO_SHOT_RECORDS
    raise ValueError(task)


def pipeline_output(task: str, pipe: Any, text: Any, params: dict[str, Any]) -> Any:
    """The pipeline's output for one text (a record dict for question-answering and
    zero-shot-classification), in splitserve's result shape."""
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
    if task == "fill-mask":
        return {"filled_masks": pipe(text["text"] if isinstance(text, dict) else text, **params)}
    if task == "question-answering":
        answers = pipe(question=text["question"], context=text["context"], **params)
        return {"answers": answers if isinstance(answers, list) else [answers]}
    if task == "zero-shot-classification":
        return {"zero_shot": pipe(text["text"], candidate_labels=text["candidate_labels"], **params)}
    raise ValueError(task)


def _close(expected: float, got: float) -> bool:
    return abs(float(expected) - float(got)) <= SCORE_TOL


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
    elif task == "fill-mask":
        exp, res = expected["filled_masks"], got["filled_masks"]
        # One mask: a flat list of candidates; several: a list per mask (the pipeline's shapes).
        assert isinstance(res[0], dict) == isinstance(exp[0], dict), f"{where}: shape {res} != pipeline {exp}"
        for e_mask, r_mask in zip(*(([x] if isinstance(x[0], dict) else x) for x in (exp, res)), strict=True):
            assert len(r_mask) == len(e_mask), f"{where}: {r_mask} != {e_mask}"
            for e, r in zip(e_mask, r_mask, strict=True):
                assert set(r) == set(e), f"{where}: keys {sorted(r)} != {sorted(e)}"
                assert (r["token"], r["token_str"], r["sequence"]) == (e["token"], e["token_str"], e["sequence"]), (
                    f"{where}: {r} != {e}"
                )
                assert _close(e["score"], r["score"]), f"{where}: {r} != {e}"
    elif task == "question-answering":
        exp, res = expected["answers"], got["answers"]
        assert len(res) == len(exp), f"{where}: {res} != {exp}"
        for e, r in zip(exp, res, strict=True):
            assert set(r) == set(e), f"{where}: keys {sorted(r)} != {sorted(e)}"
            assert (r["answer"], r["start"], r["end"]) == (e["answer"], e["start"], e["end"]), (
                f"{where}: {res} != {exp}"
            )
            assert _close(e["score"], r["score"]), f"{where}: {res} != {exp}"
    elif task == "zero-shot-classification":
        exp, res = expected["zero_shot"], got["zero_shot"]
        assert set(res) == set(exp), f"{where}: keys {sorted(res)} != {sorted(exp)}"
        assert (res["sequence"], res["labels"]) == (exp["sequence"], exp["labels"]), f"{where}: {res} != {exp}"
        assert all(_close(e, r) for e, r in zip(exp["scores"], res["scores"], strict=True)), f"{where}: {res} != {exp}"
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
