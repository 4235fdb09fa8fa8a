"""The gateway's request path, transport-free: one request across the tiers,
preprocess -> model (OIP ModelInfer) -> postprocess. The gRPC servicer (`gateway_svc.server`), the
REST door (`gateway_svc.rest`) and the OpenAI-compatible routes (`gateway_svc.openai`) all call
`Gateway.predict` / `predict_stream` / `info` with a `Call` (what the gateway reads of the incoming
request, whatever door it came by); errors are raised typed (`splitserve.core.errors`) and each door
maps them to its status codes with the one table (`splitserve.core.status`).

The gateway knows no task: what it must know (does the task stream?) comes from the tiers' `Info`.
The caller's deadline (or `timeout_s`) bounds every hop; cancelling the caller's call cancels the hop
in progress. Where the time went comes back in `Call.trailing` (`gateway_svc.timing`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc

from gateway_svc.auth import Tokens
from gateway_svc.cache import ResponseCache
from gateway_svc.messages import (
    answer,
    check_model_version,
    check_post_version,
    infer_request,
    outputs,
    postprocess_request,
)
from gateway_svc.settings import GatewaySettings
from gateway_svc.stream import TextStream, ids_of, texts_of
from gateway_svc.timing import timing_metadata
from gateway_svc.versions import Versions, mismatch
from protos import grpc_predict_v2_pb2 as oip
from protos import splitserve_pb2 as pb
from splitserve.core import tracing
from splitserve.core.admission import Admission
from splitserve.core.errors import InvalidInput, ModelNotReady, Overloaded
from splitserve.core.limits import check_request_chars
from splitserve.core.status import is_load_refusal

# The caller's metadata that travels on to the tiers: trace context only. Never the caller's
# `authorization`: the tiers are not the caller's to reach (they authenticate the gateway, by mTLS).
FORWARDED_METADATA = ("traceparent", "tracestate")


@dataclass
class Call:
    """One incoming request as the gateway sees it, whatever door it came by: its metadata (gRPC
    metadata or HTTP headers: `authorization`, `traceparent`), its deadline (`time.monotonic()`;
    None: the gateway's `timeout_s`), and, once answered, where the time went (`trailing`: the
    gRPC door sends it as trailing metadata, the REST door as response headers) and what its
    params resolve to for the response cache (`cache_params`: `gateway_svc.cache`)."""

    metadata: tuple[tuple[str, str], ...] = ()
    deadline: float | None = None
    trailing: tuple[tuple[str, str], ...] = ()
    cache_params: str = ""

    def time_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()


@dataclass(frozen=True)
class Hop:
    """What bounds every downstream call of one request: its deadline, and the caller's metadata
    that travels on (trace context only: never `authorization`, see FORWARDED_METADATA)."""

    deadline: float
    metadata: tuple[tuple[str, str], ...]

    def left(self) -> float:
        return max(self.deadline - time.monotonic(), 0.001)


class Gateway:
    """The tiers behind one gateway, and the request path across them."""

    def __init__(self, settings: GatewaySettings):
        self.settings = settings
        self.pre: Any = None  # the tiers' stubs (gRPC, or inline for pre and post), once connected
        self.model: Any = None
        self.post: Any = None
        self.tokens: Tokens | None = None
        self.versions = Versions(settings)
        self.in_flight = 0
        self.admission = Admission(settings.max_in_flight_records, "records", "gateway", "max_in_flight_records")
        self.cache = ResponseCache(settings.cache_bytes) if settings.cache_bytes else None

    def connect(self, pre: Any, model: Any, post: Any, tokens: Tokens | None) -> None:
        """`pre`, `model`, `post`: the tiers' stubs; `tokens`: the accepted tokens (`auth_token_file`)."""
        self.pre, self.model, self.post, self.tokens = pre, model, post, tokens
        self.versions.connect(pre, model, post)

    @property
    def ready(self) -> bool:
        return self.versions.info is not None

    async def info(self, model: str, call: Call) -> pb.TierInfo:
        """What the gateway serves of `model` (empty: the default one)."""
        self._authorize(call)
        return self.versions.model_info(model)

    async def predict(self, request: pb.PredictRequest, call: Call) -> pb.PredictResponse:
        async with self._admitted(request, call):
            if self.cache is None:
                return await self._predict(request, call)
            fingerprint = await self.versions.pinned(request.model)  # the cache's entries of this version only
            model = self.versions.model_info(request.model).model
            return await self.cache.predict(request, call, model, fingerprint, self._predict)

    async def predict_stream(self, request: pb.PredictRequest, call: Call) -> AsyncIterator[pb.PredictStreamResponse]:
        """A task that streams: each record's new text as deltas, then the final answer; any other
        task: the final answer alone."""
        async with self._admitted(request, call):
            if not self.versions.model_info(request.model).streams:
                yield pb.PredictStreamResponse(final=await self._predict(request, call))
                return
            async for event in self._predict_stream(request, call):
                yield event

    async def tokenize(self, request: pb.TokenizeRequest, call: Call) -> pb.TokenizeResponse:
        """The bundle's tokenizer on texts: the preprocess tier holds it."""
        return await self._tokenizer_call(self.pre.Tokenize, request, call)

    async def decode(self, request: pb.DecodeRequest, call: Call) -> pb.DecodeResponse:
        return await self._tokenizer_call(self.pre.Decode, request, call)

    async def _tokenizer_call(self, method: Any, request: Any, call: Call) -> Any:
        self._authorize(call)
        if not self.ready:
            raise ModelNotReady("gateway is still connecting to its tiers")
        request.fingerprint = await self.versions.pinned(request.model)
        return await self._call(method, request, self._hop(call))

    async def _predict_once(self, request: pb.PredictRequest, call: Call) -> pb.PredictResponse:
        """One request across the tiers."""
        start = time.perf_counter()
        hop = self._hop(call)
        t0 = time.perf_counter()
        pre = await self._preprocess(request, hop)
        t1 = time.perf_counter()
        infer = await self._call(self.model.ModelInfer, infer_request(pre), hop)
        t2 = time.perf_counter()
        check_model_version(infer, pre)
        post = await self._postprocess(request, pre, outputs(infer), hop)
        t3 = time.perf_counter()
        stages = {"preprocess": t1 - t0, "model": t2 - t1, "postprocess": t3 - t2}
        call.trailing = timing_metadata(stages, time.perf_counter() - start, infer)
        call.cache_params = pre.cache_params
        return answer(pre, post)

    async def _predict_stream(self, request: pb.PredictRequest, call: Call) -> AsyncIterator[pb.PredictStreamResponse]:
        """Preprocess, then the model tier's ModelStreamInfer: the token chunks that arrived while
        the last delta was decoded are decoded together by the postprocess tier (the gateway has
        no tokenizer), and each record's new text is sent as a delta; then the final response."""
        start = time.perf_counter()
        hop = self._hop(call)
        pre = await self._preprocess(request, hop)
        t1 = time.perf_counter()
        stream = self.model.ModelStreamInfer(iter([infer_request(pre)]), timeout=hop.left(), metadata=hop.metadata)
        chunks: asyncio.Queue[Any] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for message in stream:
                    chunks.put_nowait(message)
                chunks.put_nowait(None)
            except grpc.aio.AioRpcError as exc:
                chunks.put_nowait(exc)

        reader = asyncio.create_task(pump())
        text = TextStream(len(request.records))
        final: oip.ModelInferResponse | None = None
        decode_s = 0.0
        try:
            while final is None:
                items = [await chunks.get()]
                while not chunks.empty():
                    items.append(chunks.get_nowait())
                for item in items:
                    if isinstance(item, BaseException):
                        raise item
                    if item is None:  # the stream's end, after its final response
                        if final is None:
                            raise ModelNotReady("the model tier ended the stream without a final response")
                        continue
                    response = item.infer_response
                    check_model_version(response, pre)
                    if response.parameters["triton_final_response"].bool_param:
                        final = response
                    else:
                        text.add(int(response.parameters["row"].int64_param), ids_of(response.raw_output_contents[0]))
                t = time.perf_counter()
                post = await self._postprocess(request, pre, [text.tensor()], hop, partial=True)
                decode_s += time.perf_counter() - t
                for delta in text.deltas(texts_of(post), request.records, done=final is not None):
                    yield pb.PredictStreamResponse(delta=delta)
        finally:
            reader.cancel()
            stream.cancel()
        t2 = time.perf_counter()
        post = await self._postprocess(request, pre, outputs(final), hop)
        t3 = time.perf_counter()
        stages = {"preprocess": t1 - start, "model": t2 - t1 - decode_s, "postprocess": t3 - t2 + decode_s}
        call.trailing = timing_metadata(stages, time.perf_counter() - start, final)
        yield pb.PredictStreamResponse(final=answer(pre, post))

    async def _predict(self, request: pb.PredictRequest, call: Call) -> pb.PredictResponse:
        try:
            return await self._predict_once(request, call)
        except grpc.aio.AioRpcError as exc:
            # A tier no longer holds the version pinned at the last refresh (a replica the refresh
            # did not ask, a restarted one): look again, and run once more if the pick changed.
            if not mismatch(exc):
                raise
            before = self.versions.model_info(request.model).fingerprints[:1]
            await self.versions.refresh()
            if self.versions.model_info(request.model).fingerprints[:1] == before:
                raise
            return await self._predict_once(request, call)

    def _authorize(self, call: Call) -> None:
        if self.tokens is not None:
            self.tokens.check(call.metadata)

    @contextlib.asynccontextmanager
    async def _admitted(self, request: pb.PredictRequest, call: Call) -> AsyncIterator[None]:
        """Token, readiness, the request's bounds and the gateway's load, checked before any hop."""
        self._authorize(call)
        if not self.ready:
            raise ModelNotReady("gateway is still connecting to its tiers")
        if not request.records:
            raise InvalidInput("request has no records")
        if len(request.records) > self.settings.max_records:
            raise InvalidInput(f"request has {len(request.records)} records; the limit is {self.settings.max_records}")
        check_request_chars(request.records, self.settings.max_request_chars)
        if self.in_flight >= self.settings.max_in_flight:
            raise Overloaded(f"gateway has {self.in_flight} requests in flight (max_in_flight); retry later")
        left = call.time_left()
        with self.admission.admit(len(request.records), self.settings.timeout_s if left is None else left) as ticket:
            self.in_flight += 1
            try:
                yield
            except grpc.aio.AioRpcError as exc:
                if is_load_refusal(exc):  # refused behind for its load: refuse such load at the door
                    self.admission.refused_behind(ticket)
                raise
            finally:
                self.in_flight -= 1

    def _hop(self, call: Call) -> Hop:
        left = call.time_left()
        deadline = time.monotonic() + (left if left is not None else self.settings.timeout_s)
        metadata = tuple((k, v) for k, v in call.metadata if k in FORWARDED_METADATA)
        return Hop(deadline, tracing.outgoing(metadata))

    async def _preprocess(self, request: pb.PredictRequest, hop: Hop) -> pb.PreprocessResponse:
        fingerprint = await self.versions.pinned(request.model)
        message = pb.PreprocessRequest(
            model=request.model, records=request.records, params=request.params, fingerprint=fingerprint
        )
        return await self._call(self.pre.Preprocess, message, hop)

    async def _postprocess(
        self,
        request: pb.PredictRequest,
        pre: pb.PreprocessResponse,
        tensors: list[pb.Tensor],
        hop: Hop,
        partial: bool = False,
    ) -> pb.PostprocessResponse:
        post = await self._call(self.post.Postprocess, postprocess_request(request, pre, tensors, partial), hop)
        check_post_version(post, pre)
        return post

    async def _call(self, method: Any, request: Any, hop: Hop) -> Any:
        """One hop; a replica that does not hold the pinned version (a rollout half way through its
        replicas) refuses before any work, and the call goes to the next replica (round robin)."""
        for attempt in range(1, self.settings.max_attempts + 1):
            try:
                return await method(request, timeout=hop.left(), metadata=hop.metadata)
            except grpc.aio.AioRpcError as exc:
                if attempt == self.settings.max_attempts or not mismatch(exc):
                    raise
        raise AssertionError("unreachable")
