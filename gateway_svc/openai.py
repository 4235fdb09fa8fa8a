"""OpenAI-compatible routes on the gateway's REST door, for the clients that speak OpenAI's API
(the `openai` SDKs, LangChain, LlamaIndex):

    GET  /v1/models, /v1/models/{model}
    POST /v1/embeddings          a model whose results are embeddings (feature-extraction)
    POST /v1/completions         a model that generates text (`streams` in its Info)
    POST /v1/chat/completions    the same, messages rendered with the tokenizer's chat template

Each request becomes a gateway PredictRequest (one record per input, prompt or chat) run by the
request path every door calls (`gateway_svc.orchestrator.Gateway`: `predict`; completions always
`predict_stream`, whose deltas are the new text), so tokens, limits and errors are the gateway's. OpenAI's fields map onto the bundle's params; a field left out leaves the bundle's
default: `max_tokens` -> max_new_tokens, `temperature` (0: greedy, else sampling at it),
`top_p`, `stop`, `seed`. What the bundle cannot honour (n > 1, logprobs, penalties, ...) is
refused (400), naming the field. `params` (an extension, `extra_body={"params": {...}}` in the
SDK) passes any of the bundle's own params (e.g. `pooling`). Usage counts the prompt's tokens as
the model tier counted them; completion tokens are the generated ones.
"""

from __future__ import annotations

import array
import base64
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from gateway_svc.orchestrator import Call
from gateway_svc.rest import checked_object, http_call
from protos import splitserve_pb2 as pb
from splitserve.core import codec
from splitserve.core.errors import InvalidInput
from splitserve.core.http_server import event_stream, handled, json_response, read_json
from splitserve.tasks import result_from_pb

# Fields accepted only at their neutral values (what the model tier does anyway); the first is
# named when refusing. An absent field, null, [] and {} are neutral too.
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "n": (1,),
    "best_of": (1,),
    "logprobs": (False,),
    "top_logprobs": (0,),
    "echo": (False,),
    "suffix": ("",),
    "presence_penalty": (0,),
    "frequency_penalty": (0,),
    "logit_bias": ({},),
    "tools": ([],),
    "tool_choice": ("none",),
    "response_format": ({"type": "text"},),
}
_IGNORED = {"user", "stream_options", "params", "model", "stream", "metadata", "store", "parallel_tool_calls"}
_SAMPLING = {"max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "seed"}
COMPLETION_FIELDS = {"prompt", *_SAMPLING, *_NEUTRAL, *_IGNORED}
CHAT_FIELDS = {"messages", *_SAMPLING, *_NEUTRAL, *_IGNORED}
EMBEDDING_FIELDS = {"input", "encoding_format", "dimensions", "user", "params", "model"}


def error_body(code: Any, message: str) -> dict[str, Any]:
    """OpenAI's error shape (the SDKs raise it as APIStatusError with this message)."""
    kind = "invalid_request_error" if code.name in ("INVALID_ARGUMENT", "NOT_FOUND") else "server_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": code.name}}


def generation_params(body: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's sampling fields as the bundle's generation params (absent: the bundle's default)."""
    for name, neutral in _NEUTRAL.items():
        value = body.get(name)
        if value not in (None, [], {}) and value not in neutral:
            raise InvalidInput(f"field {name!r}: only {neutral[0]!r} is supported")
    params = dict(_own_params(body))
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        params["max_new_tokens"] = max_tokens
    temperature = body.get("temperature")
    if temperature is not None:
        params["do_sample"] = temperature > 0
        if temperature > 0:
            params["temperature"] = temperature
    for name in ("top_p", "seed"):
        if body.get(name) is not None:
            params[name] = body[name]
    stop = body.get("stop")
    if stop is not None:
        params["stop"] = [stop] if isinstance(stop, str) else stop
    return params


def _own_params(body: dict[str, Any]) -> dict[str, Any]:
    params = body.get("params") or {}
    if not isinstance(params, dict):
        raise InvalidInput("field 'params' must be an object of the bundle's request params")
    return params


def _texts(value: Any, field: str, token_ids: bool = False) -> list[Any]:
    """The inputs as records: strings, or (`token_ids`: embeddings) `{"token_ids": [...]}` for
    OpenAI's token-id input, one list of ints or a list of such lists."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    ints = isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    lists = isinstance(value, list) and value and all(isinstance(v, list) for v in value)
    if (ints or lists) and not token_ids:
        raise InvalidInput(f"field {field!r}: token-id input is for /v1/embeddings only; send text")
    if ints:
        return [{"token_ids": value}]
    if lists:
        return [{"token_ids": v} for v in value]  # each checked as a record's token_ids
    raise InvalidInput(
        f"field {field!r} must be a string, a non-empty list of strings"
        + (", a list of token ids or a list of lists of token ids" if token_ids else "")
    )


def _usage(call: Call, completion: int | None = None) -> dict[str, int]:
    prompt = int(dict(call.trailing).get("splitserve-input-tokens", 0))
    usage = {"prompt_tokens": prompt, "total_tokens": prompt + (completion or 0)}
    return usage if completion is None else {**usage, "completion_tokens": completion}


def _finish_reason(generated: dict[str, Any], params: dict[str, Any]) -> str:
    """ "length" when it stopped at max_tokens, else "stop" (an end token or a stop sequence)."""
    limit = params.get("max_new_tokens")
    return "length" if limit is not None and len(generated["token_ids"]) >= limit else "stop"


def _generated(response: pb.PredictResponse) -> list[dict[str, Any]]:
    if response.rows or any(r.WhichOneof("output") != "generated" for r in response.results):
        raise InvalidInput(f"model {response.model!r} does not answer with generated text")
    return [result_from_pb(r)["generated"][0] for r in response.results]


def routes(gateway: Any) -> list[Any]:
    """The routes, bound to a `Gateway` (`gateway_svc.orchestrator`)."""
    from starlette.routing import Route

    async def served(call: Call, model: str | None) -> pb.TierInfo:
        return await gateway.info(model or "", call)  # unknown: NOT_FOUND

    async def models(request: Any) -> Any:
        info = await served(http_call(request), request.path_params.get("model"))
        if "model" in request.path_params:
            return json_response({"id": info.model, "object": "model", "created": 0, "owned_by": "splitserve"})
        entries = [{"id": m, "object": "model", "created": 0, "owned_by": "splitserve"} for m in info.models]
        return json_response({"object": "list", "data": entries})

    async def embeddings(request: Any) -> Any:
        body = checked_object(await read_json(request), EMBEDDING_FIELDS, "/v1/embeddings")
        call = http_call(request)
        info = await served(call, body.get("model"))
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise InvalidInput(f"field 'encoding_format' must be 'float' or 'base64', got {encoding!r}")
        texts = _texts(body.get("input"), "input", token_ids=True)
        params = _own_params(body)
        if body.get("dimensions") is not None:  # the task's Matryoshka param (checked there)
            params = {**params, "dimensions": body["dimensions"]}
        response = await gateway.predict(codec.predict_request(texts, params, info.model), call)
        data = []
        for i, result in enumerate(response.results):
            if result.WhichOneof("output") != "embedding":
                raise InvalidInput(f"model {info.model!r} (task {info.task}) does not answer with embeddings")
            if len(result.embedding.shape) != 1:
                raise InvalidInput(
                    f"model {info.model!r} answers with one vector per token (pooling 'none'); export it with "
                    "--set pooling=mean (or cls), or send params: {'pooling': 'mean'}"
                )
            vector: Any = list(result.embedding.values)
            if encoding == "base64":
                floats = array.array("f", vector)
                if sys.byteorder == "big":
                    floats.byteswap()
                vector = base64.b64encode(floats.tobytes()).decode()
            data.append({"object": "embedding", "index": i, "embedding": vector})
        return json_response({"object": "list", "data": data, "model": info.model, "usage": _usage(call)})

    async def completions(request: Any, chat: bool) -> Any:
        path = "/v1/chat/completions" if chat else "/v1/completions"
        body = checked_object(await read_json(request), CHAT_FIELDS if chat else COMPLETION_FIELDS, path)
        call = http_call(request)
        info = await served(call, body.get("model"))
        if not info.streams:
            raise InvalidInput(f"model {info.model!r} (task {info.task}) does not generate text")
        params = generation_params(body)
        if chat:
            if not isinstance(body.get("messages"), list):
                raise InvalidInput("field 'messages' must be a list of {'role', 'content'} objects")
            records: list[Any] = [{"messages": body["messages"]}]
        else:
            records = _texts(body.get("prompt"), "prompt")
        # PredictStream either way: its deltas are the new text only, whatever the task (a
        # text-generation result has the prompt in front by default), as OpenAI's text is.
        events = gateway.predict_stream(codec.predict_request(records, params, info.model), call)
        reply = Reply(chat, info.model, params)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return await event_stream(reply.stream(events, call, include_usage), error_body)
        return json_response(await reply.whole(events, call))

    async def completion(request: Any) -> Any:
        return await completions(request, chat=False)

    async def chat_completion(request: Any) -> Any:
        return await completions(request, chat=True)

    return [
        Route("/v1/models", handled(models, error_body), methods=["GET"]),
        Route("/v1/models/{model:path}", handled(models, error_body), methods=["GET"]),
        Route("/v1/embeddings", handled(embeddings, error_body), methods=["POST"]),
        Route("/v1/completions", handled(completion, error_body), methods=["POST"]),
        Route("/v1/chat/completions", handled(chat_completion, error_body), methods=["POST"]),
    ]


class Reply:
    """A completion's answer in OpenAI's shapes: whole, or as stream chunks."""

    def __init__(self, chat: bool, model: str, params: dict[str, Any]):
        self.chat, self.model, self.params = chat, model, params
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.object = "chat.completion" if chat else "text_completion"

    def _envelope(self, choices: list[dict[str, Any]], chunk: bool = False) -> dict[str, Any]:
        kind = "chat.completion.chunk" if chunk and self.chat else self.object
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": choices}

    def _choice(self, index: int, text: str | None, finish: str | None, chunk: bool) -> dict[str, Any]:
        if not self.chat:
            return {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish}
        content = {"role": "assistant", "content": text} if not chunk else ({"content": text} if text else {})
        return {"index": index, ("delta" if chunk else "message"): content, "logprobs": None, "finish_reason": finish}

    async def whole(self, events: Any, call: Call) -> dict[str, Any]:
        texts: dict[int, str] = {}
        async for event in events:
            if event.WhichOneof("event") == "delta":
                texts[event.delta.record] = texts.get(event.delta.record, "") + event.delta.text
            else:
                generated = _generated(event.final)
        choices = [
            self._choice(i, texts.get(i, ""), _finish_reason(g, self.params), chunk=False)
            for i, g in enumerate(generated)
        ]
        return {**self._envelope(choices), "usage": _usage(call, sum(len(g["token_ids"]) for g in generated))}

    async def stream(self, events: Any, call: Call, include_usage: bool) -> AsyncIterator[Any]:
        """OpenAI's chunks: (chat: the assistant's role first) each delta of new text, a last
        chunk per choice with its finish_reason, the usage chunk if asked, then [DONE]."""
        try:
            first = await anext(events)  # what fails early answers with its HTTP status, not a chunk
            if self.chat:
                yield self._envelope([{"index": 0, "delta": {"role": "assistant", "content": ""}}], chunk=True)
            async for event in _chain(first, events):
                if event.WhichOneof("event") == "delta":
                    d = event.delta
                    if d.text:
                        yield self._envelope([self._choice(d.record, d.text, None, chunk=True)], chunk=True)
                    continue
                generated = _generated(event.final)
                for i, g in enumerate(generated):
                    finish = _finish_reason(g, self.params)
                    yield self._envelope([self._choice(i, None, finish, chunk=True)], chunk=True)
                if include_usage:
                    usage = _usage(call, sum(len(g["token_ids"]) for g in generated))
                    yield {**self._envelope([], chunk=True), "usage": usage}
            yield "[DONE]"
        finally:
            await events.aclose()


async def _chain(first: Any, rest: Any) -> AsyncIterator[Any]:
    yield first
    async for item in rest:
        yield item
