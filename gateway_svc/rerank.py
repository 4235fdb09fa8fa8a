"""Rerank and score, transport-free: pairs of texts scored by the bundle, through the request path
every door calls (`gateway_svc.orchestrator.Gateway.predict`). The gRPC door (`Rerank`, `Score`)
and the REST routes (`gateway_svc.text_routes`) call `rerank` and `score`.

How a pair is scored is the bundle's task's to say (`Task.pair_scoring`):

- "cross-encoder" (text-classification with one label: a CrossEncoder): each pair is one record,
  `text` + `text_pair`, tokenized together (truncated as the model's max length says); its score
  is the label's, with the bundle's activation (a one-label model: sigmoid, as
  `CrossEncoder.predict`), or the logit with `raw_scores`. A model with more labels is refused.
- "cosine" (feature-extraction): each distinct text is embedded once (pooled: the bundle's
  `pooling`, or the request's `params`), and a pair's score is the cosine of its two vectors.

A pair whose text (either one) was cut to the model's max length says so (`truncated`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gateway_svc.orchestrator import Call
from protos import splitserve_pb2 as pb
from splitserve.core import codec
from splitserve.core.errors import InvalidInput
from splitserve.tasks import lookup


def _texts(values: Any, field: str) -> list[str]:
    texts = list(values)
    if not texts:
        raise InvalidInput(f"field {field!r} is empty: send at least one text")
    for i, text in enumerate(texts):
        if not text.strip():
            raise InvalidInput(f"field {field!r}: text {i} is empty")
    return texts


async def rerank(gateway: Any, request: pb.RerankRequest, call: Call) -> pb.Scores:
    """The documents scored against the query, best first (ties in the request's order), the
    best `top_n` only when given."""
    if not request.query.strip():
        raise InvalidInput("field 'query' is missing or empty")
    documents = _texts(request.documents, "documents")
    if request.HasField("top_n") and request.top_n < 1:
        raise InvalidInput(f"field 'top_n' must be at least 1, got {request.top_n}")
    pairs = [(request.query, d) for d in documents]
    answer = await _scored(gateway, request.model, pairs, request.raw_scores, request.params, call)
    ranked = sorted(answer.results, key=lambda r: -r.score)
    if request.HasField("top_n"):
        ranked = ranked[: request.top_n]
    results = [
        pb.PairScore(
            index=r.index,
            score=r.score,
            truncated=r.truncated,
            document=documents[r.index] if request.return_documents else None,
        )
        for r in ranked
    ]
    return pb.Scores(
        model=answer.model, fingerprint=answer.fingerprint, results=results, input_tokens=answer.input_tokens
    )


async def score(gateway: Any, request: pb.ScoreRequest, call: Call) -> pb.Scores:
    """Pairs scored in the request's order: text_1 with each of text_2 (1:1, 1:N), or text_1[i]
    with text_2[i] (N:N)."""
    first, second = _texts(request.text_1, "text_1"), _texts(request.text_2, "text_2")
    if len(first) > 1 and len(first) != len(second):
        raise InvalidInput(
            f"field 'text_1' has {len(first)} texts and 'text_2' {len(second)}: send one text_1 for any number "
            "of text_2, or as many of each (pairs)"
        )
    pairs = list(zip(first * len(second) if len(first) == 1 else first, second, strict=True))
    return await _scored(gateway, request.model, pairs, request.raw_scores, request.params, call)


async def _scored(
    gateway: Any, model: str, pairs: list[tuple[str, str]], raw: bool, params: Any, call: Call
) -> pb.Scores:
    info = await gateway.info(model, call)
    task = lookup(info.task)
    how = task.pair_scoring if task is not None else None
    own = codec.params_from_struct(params) or {}
    if how == "cross-encoder":
        response, scores, truncated = await _cross_encoded(gateway, info, pairs, raw, own, call)
    elif how == "cosine":
        response, scores, truncated = await _cosines(gateway, info, pairs, own, call)
    else:
        raise InvalidInput(
            f"model {info.model!r} (task {info.task}) cannot rerank or score pairs: that takes a cross-encoder "
            "(text-classification with one label) or an embedding model (feature-extraction)"
        )
    tokens = int(dict(call.trailing).get("splitserve-input-tokens", 0))
    results = [
        pb.PairScore(index=i, score=s, truncated=t) for i, (s, t) in enumerate(zip(scores, truncated, strict=True))
    ]
    return pb.Scores(model=response.model, fingerprint=response.fingerprint, results=results, input_tokens=tokens)


def _no_rows(response: pb.PredictResponse, info: pb.TierInfo) -> None:
    if response.rows:
        raise InvalidInput(f"model {info.model!r} answers with a template's rows; rerank and score need its scores")


async def _cross_encoded(
    gateway: Any, info: pb.TierInfo, pairs: list[tuple[str, str]], raw: bool, own: dict[str, Any], call: Call
) -> tuple[pb.PredictResponse, list[float], list[bool]]:
    records = [{"id": str(i), "text": a, "text_pair": b} for i, (a, b) in enumerate(pairs)]
    params = {**own, "top_k": None, **({"function_to_apply": "none"} if raw else {})}
    response = await gateway.predict(codec.predict_request(records, params, info.model), call)
    _no_rows(response, info)
    scores = []
    for result in response.results:
        labels = result.labels.labels
        if len(labels) != 1:
            raise InvalidInput(
                f"model {info.model!r} has {len(labels)} labels; rerank and score take a cross-encoder with one "
                "(num_labels=1), whose score is the pair's relevance"
            )
        scores.append(labels[0].score)
    cut = set(response.truncated)
    return response, scores, [r["id"] in cut for r in records]


async def _cosines(
    gateway: Any, info: pb.TierInfo, pairs: list[tuple[str, str]], own: dict[str, Any], call: Call
) -> tuple[pb.PredictResponse, list[float], list[bool]]:
    texts = list(dict.fromkeys(t for pair in pairs for t in pair))  # each distinct text embedded once
    row = {t: i for i, t in enumerate(texts)}
    records = [{"id": str(i), "text": t} for i, t in enumerate(texts)]
    response = await gateway.predict(codec.predict_request(records, own, info.model), call)
    _no_rows(response, info)
    if any(len(r.embedding.shape) != 1 for r in response.results):
        raise InvalidInput(
            f"model {info.model!r} answers with one vector per token (pooling 'none'); export it with "
            "--set pooling=mean (or cls), or send params: {'pooling': 'mean'}"
        )
    vectors = np.asarray([r.embedding.values for r in response.results], dtype=np.float64)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
    cut = set(response.truncated)
    scores = [float(vectors[row[a]] @ vectors[row[b]]) for a, b in pairs]
    return response, scores, [str(row[a]) in cut or str(row[b]) in cut for a, b in pairs]
