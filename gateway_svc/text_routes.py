"""Rerank, score, tokenize and decode on the gateway's REST door, in the shapes the clients of
other servers send (each also over gRPC: `Rerank`, `Score`, `Tokenize`, `Decode`):

    POST /v1/rerank, /v2/rerank   Jina / Cohere: {model, query, documents, top_n, return_documents}
        -> {id, model, results: [{index, relevance_score, truncated[, document: {text}]}], usage}
    POST /rerank                  TEI: {query, texts, raw_scores, return_text, truncate}
        -> [{index, score, truncated[, text]}]
    POST /score, /v1/score        vLLM: {model, text_1, text_2}
        -> {id, object: "list", created, model, data: [{index, object: "score", score, truncated}], usage}
    POST /tokenize                TEI: {inputs, add_special_tokens} -> [[{id, text, special, start, stop}]]
    POST /decode                  TEI: {ids, skip_special_tokens} -> [text]

Rerank answers best first; score in the pairs' order. `truncated` says a text of the pair was cut
to the model's max length. Errors come in the shape of the route's server: OpenAI's (`/v1`, `/v2`,
`/score`, as vLLM answers) or TEI's (`{"error", "error_type"}`). `model` (TEI's routes too) picks one of several bundles; `params` (an
extension) passes the bundle's own request params (`pooling`, ...). The scoring is
`gateway_svc.rerank`'s; errors name the field (400), with the HTTP status of the one table.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from gateway_svc.openai import error_body
from gateway_svc.rerank import rerank, score
from gateway_svc.rest import checked_object, http_call
from protos import splitserve_pb2 as pb
from splitserve.core import codec
from splitserve.core.errors import InvalidInput
from splitserve.core.http_server import handled, json_response, read_json

RERANK_FIELDS = {"model", "query", "documents", "top_n", "return_documents", "params"}
TEI_RERANK_FIELDS = {
    "model",
    "query",
    "texts",
    "raw_scores",
    "return_text",
    "truncate",
    "truncation_direction",
    "params",
}
SCORE_FIELDS = {"model", "text_1", "text_2", "params"}
TOKENIZE_FIELDS = {"model", "inputs", "add_special_tokens"}
DECODE_FIELDS = {"model", "ids", "skip_special_tokens"}


# TEI's error types, by gRPC status code (others: "backend").
_TEI_ERRORS = {"INVALID_ARGUMENT": "validation", "RESOURCE_EXHAUSTED": "overloaded", "UNAVAILABLE": "unhealthy"}


def tei_error(code: Any, message: str) -> dict[str, Any]:
    """TEI's error shape, for its routes (`/rerank`, `/tokenize`, `/decode`)."""
    return {"error": message, "error_type": _TEI_ERRORS.get(code.name, "backend")}


def _strings(value: Any, field: str, documents: bool = False) -> list[str]:
    """A string or a list of strings (`documents`: Cohere's `{"text": ...}` objects too)."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        raise InvalidInput(f"field {field!r} must be a string or a non-empty list of strings")
    out = []
    for i, item in enumerate(value):
        if documents and isinstance(item, dict) and set(item) == {"text"}:
            item = item["text"]
        if not isinstance(item, str):
            wanted = "a string or {'text': string}" if documents else "a string"
            raise InvalidInput(f"field {field!r}: item {i} must be {wanted}, got {type(item).__name__}")
        out.append(item)
    return out


def _flag(body: dict[str, Any], field: str, default: bool) -> bool:
    value = body.get(field)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidInput(f"field {field!r} must be true or false, got {value!r}")
    return value


def _params(body: dict[str, Any]) -> Any:
    params = body.get("params") or {}
    if not isinstance(params, dict):
        raise InvalidInput("field 'params' must be an object of the bundle's request params")
    return codec.params_to_struct(params)


def _model(body: dict[str, Any]) -> str:
    model = body.get("model") or ""
    if not isinstance(model, str):
        raise InvalidInput(f"field 'model' must be a string, got {model!r}")
    return model


def _top_n(body: dict[str, Any]) -> int | None:
    top_n = body.get("top_n")
    if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool)):
        raise InvalidInput(f"field 'top_n' must be an integer, got {top_n!r}")
    return top_n


def _query(body: dict[str, Any]) -> str:
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        raise InvalidInput("field 'query' must be a non-empty string")
    return query


def _usage(scores: pb.Scores) -> dict[str, int]:
    return {"prompt_tokens": scores.input_tokens, "total_tokens": scores.input_tokens}


def routes(gateway: Any) -> list[Any]:
    """The routes, bound to a `Gateway` (`gateway_svc.orchestrator`)."""
    from starlette.routing import Route

    async def cohere_rerank(request: Any) -> Any:
        body = checked_object(await read_json(request), RERANK_FIELDS, request.url.path)
        message = pb.RerankRequest(
            model=_model(body),
            query=_query(body),
            documents=_strings(body.get("documents"), "documents", documents=True),
            top_n=_top_n(body),
            return_documents=_flag(body, "return_documents", False),
            params=_params(body),
        )
        call = http_call(request)
        scores = await rerank(gateway, message, call)
        results = []
        for r in scores.results:
            result: dict[str, Any] = {"index": r.index, "relevance_score": r.score, "truncated": r.truncated}
            if r.HasField("document"):
                result["document"] = {"text": r.document}
            results.append(result)
        answer = {"id": f"rerank-{uuid.uuid4().hex}", "model": scores.model, "results": results}
        return json_response({**answer, "usage": _usage(scores)}, headers=dict(call.trailing))

    async def tei_rerank(request: Any) -> Any:
        body = checked_object(await read_json(request), TEI_RERANK_FIELDS, "/rerank")
        direction = body.get("truncation_direction") or "right"
        if not isinstance(direction, str) or direction.lower() != "right":
            raise InvalidInput(f"field 'truncation_direction': only 'right' is supported, got {direction!r}")
        params = _params(body)
        params.update({"truncation": _flag(body, "truncate", True)})
        message = pb.RerankRequest(
            model=_model(body),
            query=_query(body),
            documents=_strings(body.get("texts"), "texts"),
            raw_scores=_flag(body, "raw_scores", False),
            return_documents=_flag(body, "return_text", False),
            params=params,
        )
        call = http_call(request)
        scores = await rerank(gateway, message, call)
        answer = []
        for r in scores.results:
            result: dict[str, Any] = {"index": r.index, "score": r.score, "truncated": r.truncated}
            if r.HasField("document"):
                result["text"] = r.document
            answer.append(result)
        return json_response(answer, headers=dict(call.trailing))

    async def vllm_score(request: Any) -> Any:
        body = checked_object(await read_json(request), SCORE_FIELDS, "/score")
        message = pb.ScoreRequest(
            model=_model(body),
            text_1=_strings(body.get("text_1"), "text_1"),
            text_2=_strings(body.get("text_2"), "text_2"),
            params=_params(body),
        )
        call = http_call(request)
        scores = await score(gateway, message, call)
        data = [
            {"index": r.index, "object": "score", "score": r.score, "truncated": r.truncated} for r in scores.results
        ]
        answer = {"id": f"score-{uuid.uuid4().hex}", "object": "list", "created": int(time.time())}
        answer.update({"model": scores.model, "data": data, "usage": _usage(scores)})
        return json_response(answer, headers=dict(call.trailing))

    async def tokenize(request: Any) -> Any:
        body = checked_object(await read_json(request), TOKENIZE_FIELDS, "/tokenize")
        message = pb.TokenizeRequest(
            model=_model(body),
            inputs=_strings(body.get("inputs"), "inputs"),
            add_special_tokens=_flag(body, "add_special_tokens", True),
        )
        response = await gateway.tokenize(message, http_call(request))
        return json_response(codec.tokens_plain(response))

    async def decode(request: Any) -> Any:
        body = checked_object(await read_json(request), DECODE_FIELDS, "/decode")
        ids = body.get("ids")
        is_id = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
        if isinstance(ids, list) and ids and all(is_id(v) for v in ids):
            ids = [ids]
        if not isinstance(ids, list) or not ids or not all(isinstance(r, list) and all(map(is_id, r)) for r in ids):
            raise InvalidInput("field 'ids' must be a non-empty list of token ids, or a list of such lists")
        message = pb.DecodeRequest(
            model=_model(body),
            ids=[pb.TokenIds(ids=row) for row in ids],
            skip_special_tokens=_flag(body, "skip_special_tokens", True),
        )
        response = await gateway.decode(message, http_call(request))
        return json_response(list(response.texts))

    return [
        Route("/v1/rerank", handled(cohere_rerank, error_body), methods=["POST"]),
        Route("/v2/rerank", handled(cohere_rerank, error_body), methods=["POST"]),
        Route("/rerank", handled(tei_rerank, tei_error), methods=["POST"]),
        Route("/score", handled(vllm_score, error_body), methods=["POST"]),
        Route("/v1/score", handled(vllm_score, error_body), methods=["POST"]),
        Route("/tokenize", handled(tokenize, tei_error), methods=["POST"]),
        Route("/decode", handled(decode, tei_error), methods=["POST"]),
    ]
