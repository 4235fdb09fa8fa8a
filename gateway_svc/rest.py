"""The gateway's REST door (`--rest-port`): the typed API as JSON, beside the gRPC port.

    POST /v1/predict   {"records": [...], "params": {...}, "model": "", "stream": false}
        -> {"model", "fingerprint", "results": [...]}   (a templated bundle: "rows" instead)
        stream: server-sent events, each `data:` one JSON object: a record's new text
        {"record", "id", "text", "token_ids"}, ..., then the whole answer as above
    GET  /v1/info      -> {"model", "task", "fingerprint", "streams"}
    GET  /health/live, /health/ready     (open without a token, as gRPC health is)
    and the OpenAI-compatible routes (`gateway_svc.openai`), rerank, score, tokenize and decode
    (`gateway_svc.text_routes`).

Records, params and results are the gRPC API's, as `splitserve.client` shows them; JSON has no
bytes, so an audio record's file travels as `"audio": {"b64": "<base64 of the file>"}` (or as
samples: `"audio": [floats], "sampling_rate": 16000`). Never a path or a URL. Every route
calls the request path the gRPC door calls (`gateway_svc.orchestrator.Gateway`: `predict`,
`predict_stream`, `info`), the HTTP headers as the call's metadata: the same admission, tokens,
deadlines and errors (HTTP statuses from the one error table, `splitserve.core.status`). Where the
time went comes back under the gRPC trailing metadata's names (`splitserve-model-us`, ...), as
response headers.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from typing import Any

from gateway_svc.orchestrator import Call
from protos import splitserve_pb2 as pb
from splitserve.core import codec
from splitserve.core.errors import InvalidInput
from splitserve.core.http_server import event_stream, handled, json_response, read_json
from splitserve.tasks import answer_from_pb

PREDICT_FIELDS = {"records", "params", "model", "stream"}


def answer_json(response: pb.PredictResponse) -> dict[str, Any]:
    """A PredictResponse as JSON: typed results (as the Python client returns them), or rows."""
    key = "rows" if response.rows else "results"
    return {"model": response.model, "fingerprint": response.fingerprint, key: answer_from_pb(response)}


def delta_json(delta: pb.TextDelta) -> dict[str, Any]:
    return {"record": delta.record, "id": delta.id, "text": delta.text, "token_ids": list(delta.token_ids)}


def checked_object(body: Any, known: set[str], what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidInput(f"{what}: the body must be a JSON object")
    unknown = sorted(set(body) - known)
    if unknown:
        raise InvalidInput(f"{what}: unknown field(s) {unknown}; known: {sorted(known)}")
    return body


def json_records(records: Any) -> Any:
    """The records of a JSON body, an audio file's base64 (`{"b64": ...}`) decoded to its bytes."""
    if not isinstance(records, list):
        return records  # to_records says what is wrong with it
    out = []
    for i, record in enumerate(records):
        audio = record.get("audio") if isinstance(record, dict) else None
        if isinstance(audio, dict):
            if set(audio) != {"b64"} or not isinstance(audio["b64"], str):
                raise InvalidInput(
                    f'record {i}: field \'audio\' as an object must be {{"b64": "<base64 of the file>"}}'
                )
            try:
                record = {**record, "audio": base64.b64decode(audio["b64"], validate=True)}
            except (binascii.Error, ValueError):
                raise InvalidInput(f"record {i}: field 'audio': 'b64' is not valid base64") from None
        out.append(record)
    return out


def http_call(request: Any) -> Call:
    """An HTTP request as the request path sees it: its headers are the call's metadata
    (`authorization`, `traceparent`); its deadline is the gateway's `timeout_s`."""
    return Call(tuple(request.headers.items()))


def build_app(gateway: Any) -> Any:
    """The Starlette app over a `Gateway` (`gateway_svc.orchestrator`), which does the work."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    from gateway_svc import openai, text_routes

    async def predict(request: Any) -> Any:
        body = checked_object(await read_json(request), PREDICT_FIELDS, "/v1/predict")
        if "records" not in body:
            raise InvalidInput("/v1/predict: field 'records' is missing")
        records = json_records(body["records"])
        message = codec.predict_request(records, body.get("params"), str(body.get("model") or ""))
        call = http_call(request)
        if body.get("stream"):
            return await event_stream(stream_events(gateway, message, call), lambda c, m: error_json(c.name, m))
        response = await gateway.predict(message, call)
        return json_response(answer_json(response), headers=dict(call.trailing))

    async def info(request: Any) -> Any:
        i = await gateway.info("", http_call(request))
        return json_response({"model": i.model, "task": i.task, "fingerprint": i.fingerprint, "streams": i.streams})

    async def live(request: Any) -> Any:
        return json_response({"live": True})

    async def ready(request: Any) -> Any:
        ready = gateway.ready
        return json_response({"ready": ready}, 200 if ready else 503)

    routes = [
        Route("/v1/predict", handled(predict), methods=["POST"]),
        Route("/v1/info", handled(info), methods=["GET"]),
        Route("/health/live", live, methods=["GET"]),
        Route("/health/ready", ready, methods=["GET"]),
        *openai.routes(gateway),
        *text_routes.routes(gateway),
    ]
    return Starlette(routes=routes)


def error_json(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


async def stream_events(gateway: Any, message: pb.PredictRequest, call: Call) -> AsyncIterator[dict[str, Any]]:
    async for event in gateway.predict_stream(message, call):
        if event.WhichOneof("event") == "delta":
            yield delta_json(event.delta)
        else:
            yield answer_json(event.final)
