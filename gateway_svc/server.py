"""Gateway gRPC server: `splitserve.v1.Gateway`, the one API clients call.

Predict = Preprocess -> ModelInfer (OIP) -> Postprocess. With `inline_stages`, the preprocess and
postprocess stages run in this process (same code, called instead of their tiers; the program that
starts the gateway hands them in). Tensors are forwarded as bytes, never decoded here
(PredictStream excepted: it gathers the streamed token ids of each record). The gateway knows no
task: what it must know (does the task stream?) comes from the tiers' `Info`. The client's
deadline (or `timeout_s`) bounds every hop; cancelling the client's call cancels the hop in
progress. Where each request's time went is sent back as trailing metadata
(`splitserve-<stage>-us`; `model` is the whole hop, `queue` and `inference` the model tier's own
split of it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from gateway_svc.pool import channel_credentials, connection_options
from gateway_svc.pool import open_channel as open_tier_channel
from gateway_svc.settings import GatewaySettings
from gateway_svc.stream import TextStream, ids_of, texts_of
from protos import grpc_predict_v2_pb2 as oip
from protos import grpc_predict_v2_pb2_grpc as oip_grpc
from protos import splitserve_pb2 as pb
from protos import splitserve_pb2_grpc as pb_grpc
from splitserve.core import tracing
from splitserve.core.admission import Admission
from splitserve.core.errors import (
    BundleMismatch,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    Unauthenticated,
    shown,
)
from splitserve.core.limits import check_request_chars

log = logging.getLogger("splitserve.gateway")
# The caller's metadata that travels on to the tiers: trace context only. Never the caller's
# `authorization`: the tiers are not the caller's to reach (they authenticate the gateway, by mTLS).
FORWARDED_METADATA = ("traceparent", "tracestate")
# splitserve.v1.ModelParameter's fields -> OIP InferParameter's.
_PARAM_FIELDS = {
    "bool_value": "bool_param",
    "int64_value": "int64_param",
    "double_value": "double_param",
    "string_value": "string_param",
}


class GatewayTier(pb_grpc.GatewayServicer):
    name = "gateway"
    service_names = [pb.DESCRIPTOR.services_by_name["Gateway"].full_name]

    def __init__(self, settings: GatewaySettings, stages: tuple[Any, Any] | None = None):
        """`stages`: with `inline_stages`, the preprocess and postprocess servicers to run here
        (not loaded yet; `load` loads them)."""
        if (settings.inline_stages is not None) != (stages is not None):
            raise ValueError("inline_stages needs the preprocess and postprocess stages handed in, and only then")
        self.settings = settings
        self.stages = stages
        self.in_flight = 0
        self.admission = Admission(settings.max_in_flight_records, "records", "gateway", "max_in_flight_records")
        self.info: pb.TierInfo | None = None  # the default model's
        self.infos: dict[str, pb.TierInfo] = {}  # every model's, by name
        self.channels: list[grpc.aio.Channel] = []
        self.tokens: list[bytes] | None = None
        self.held: dict[str, dict[str, list[str]]] = {}  # per model, the versions each tier holds (last refresh)
        self._refresher: asyncio.Task[None] | None = None

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_GatewayServicer_to_server(self, server)

    def rest_app(self) -> Any:
        """The REST door beside the gRPC port (`rest_port`): these handlers, over HTTP (gateway_svc.rest)."""
        from gateway_svc.rest import build_app

        return build_app(self)

    async def load(self) -> dict[str, Any]:
        s = self.settings
        self.tokens = _read_tokens(s.auth_token_file) if s.auth_token_file else None
        tls = channel_credentials(s.tier_tls_ca, s.tier_tls_cert, s.tier_tls_key)

        def open_channel(addresses: list[str]) -> grpc.aio.Channel:
            return open_tier_channel(
                addresses,
                s.max_attempts,
                s.max_message_bytes,
                tls,
                s.tier_tls_server_name,
                connection_options(s.dns_refresh_s, s.keepalive_s, s.keepalive_timeout_s),
            )

        model = open_channel(s.model)
        self.channels = [model]
        self.model = oip_grpc.GRPCInferenceServiceStub(model)
        self.pre: Any
        self.post: Any
        if self.stages is not None:
            await asyncio.gather(*(stage.load() for stage in self.stages))
            self.pre, self.post = (InlineStub(stage) for stage in self.stages)
        else:
            pre, post = open_channel(s.preprocess), open_channel(s.postprocess)
            self.channels += [pre, post]
            self.pre, self.post = pb_grpc.PreprocessStub(pre), pb_grpc.PostprocessStub(post)
        await self.refresh(wait=True)  # wait for every tier
        assert self.info is not None
        self._refresher = asyncio.create_task(self._refresh_forever())
        return {"model": self.info.model, "task": self.info.task, "fingerprint": self.info.fingerprint}

    async def refresh(self, wait: bool = False) -> None:
        """Ask the tiers which versions they hold (each tier once per replica named, a few times for
        a dns:/// name: round robin spreads the asks), and pin requests to the newest version every
        replica of every tier holds: the preprocess tier's current version first. None in common:
        say so loudly; requests are refused (bundle mismatch) until they agree. (During a rollout
        every replica keeps the old version until requests come for the new one, i.e. until
        every replica holds it.)"""
        s, timeout = self.settings, 120 if wait else 5

        async def ask(call: Any, request: Any, addresses: list[str]) -> list[Any]:
            answers = [await call(request, wait_for_ready=wait, timeout=timeout)]
            for _ in range(len(addresses) - 1 + 2 * any(a.startswith("dns:") for a in addresses)):
                with contextlib.suppress(grpc.aio.AioRpcError):  # round robin picks among the ready replicas
                    answers.append(await call(request, timeout=5))
            return answers

        first = (await ask(self.pre.Info, pb.TierInfoRequest(), []))[0]
        infos, helds = {}, {}
        for name in list(first.models) or [first.model]:  # every model the preprocess tier serves
            request = pb.TierInfoRequest(model=name)
            pres = await ask(self.pre.Info, request, s.preprocess)
            pre = pres[0]
            try:
                posts = await ask(self.post.Info, request, s.postprocess)
                metas = await ask(self.model.ModelMetadata, oip.ModelMetadataRequest(name=name), s.model)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                posts, metas = [], []  # a tier without this model: nothing in common
            held = {
                "preprocess": _versions([list(i.fingerprints) or [i.fingerprint] for i in pres]),
                "model": _versions([list(m.versions) for m in metas]),
                "postprocess": _versions([list(i.fingerprints) or [i.fingerprint] for i in posts]),
            }
            common = [f for f in held["preprocess"] if f in held["model"] and f in held["postprocess"]]
            before = self.infos.get(name)
            if not common and (before is None or before.fingerprints):  # newly without one: say it once
                log.error("tiers serve different bundles %s; requests will be refused until they agree", held)
            elif before is not None and common and common[0] != before.fingerprint:
                log.info("%s: every tier holds %s: requests switch to it", name, common[0])
            helds[name] = held
            infos[name] = pb.TierInfo(
                tier=self.name,
                model=name,
                task=pre.task,
                fingerprint=common[0] if common else pre.fingerprint,
                streams=pre.streams,
                fingerprints=common,
                models=list(first.models) or [first.model],
            )
        self.infos, self.held = infos, helds
        self.info = infos[first.model]  # the default model's

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.tier_refresh_s)
            try:
                await self.refresh()
            except Exception as exc:  # noqa: BLE001 - a tier away for a moment: keep the last view
                log.debug("refreshing the tiers' versions failed: %s", exc)

    async def _pinned(self, model: str) -> str:
        """The fingerprint this request's hops must all serve."""
        if not self.model_info(model).fingerprints:
            await self.refresh()  # they may agree by now
        info = self.model_info(model)
        if not info.fingerprints:
            held = "; ".join(f"{tier}: {', '.join(f) or 'none'}" for tier, f in self.held[info.model].items())
            raise BundleMismatch(
                f"bundle mismatch: the tiers hold no bundle in common ({held}); "
                "all tiers must be loaded from the same serving bundle"
            )
        return info.fingerprints[0]

    def model_info(self, model: str) -> pb.TierInfo:
        """What the gateway knows of model `model` (empty: the default one)."""
        if self.info is None:
            raise ModelNotReady("gateway is still connecting to its tiers")
        if not model:
            return self.info
        if model not in self.infos:
            served = ", ".join(map(repr, self.infos))
            raise ModelNotFound(f"model {shown(model)} is not served here; this gateway serves {served}")
        return self.infos[model]

    def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        """With `auth_token_file`: the call must carry `authorization: Bearer <an accepted token>`."""
        if self.tokens is None:
            return
        metadata = dict(context.invocation_metadata() or ())
        scheme, _, token = str(metadata.get("authorization", "")).partition(" ")
        if scheme.lower() != "bearer" or not any(hmac.compare_digest(token.encode(), t) for t in self.tokens):
            raise Unauthenticated("missing or unknown token: send 'authorization: Bearer <token>'")

    async def Info(self, request: pb.TierInfoRequest, context: grpc.aio.ServicerContext) -> pb.TierInfo:
        self._authorize(context)
        return self.model_info(request.model)

    @contextlib.asynccontextmanager
    async def _admitted(self, request: pb.PredictRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        self._authorize(context)
        if self.info is None:
            raise ModelNotReady("gateway is still connecting to its tiers")
        if not request.records:
            raise InvalidInput("request has no records")
        if len(request.records) > self.settings.max_records:
            raise InvalidInput(f"request has {len(request.records)} records; the limit is {self.settings.max_records}")
        check_request_chars(request.records, self.settings.max_request_chars)
        if self.in_flight >= self.settings.max_in_flight:
            raise Overloaded(f"gateway has {self.in_flight} requests in flight (max_in_flight); retry later")
        left = context.time_remaining()
        with self.admission.admit(len(request.records), self.settings.timeout_s if left is None else left):
            self.in_flight += 1
            try:
                yield
            finally:
                self.in_flight -= 1

    async def Predict(self, request: pb.PredictRequest, context: grpc.aio.ServicerContext) -> pb.PredictResponse:
        async with self._admitted(request, context):
            return await self._predict(request, context)

    async def PredictStream(
        self, request: pb.PredictRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.PredictStreamResponse]:
        async with self._admitted(request, context):
            if not self.model_info(request.model).streams:
                yield pb.PredictStreamResponse(final=await self._predict(request, context))
                return
            async for event in self._predict_stream(request, context):
                yield event

    def _hop(self, context: grpc.aio.ServicerContext) -> Hop:
        remaining = context.time_remaining()
        deadline = time.monotonic() + (remaining if remaining is not None else self.settings.timeout_s)
        metadata = tuple((k, v) for k, v in context.invocation_metadata() or () if k in FORWARDED_METADATA)
        return Hop(deadline, tracing.outgoing(metadata))

    async def _preprocess(self, request: pb.PredictRequest, hop: Hop) -> pb.PreprocessResponse:
        fingerprint = await self._pinned(request.model)
        return await self._call(
            self.pre.Preprocess,
            pb.PreprocessRequest(
                model=request.model, records=request.records, params=request.params, fingerprint=fingerprint
            ),
            hop,
        )

    async def _call(self, method: Any, request: Any, hop: Hop) -> Any:
        """One hop; a replica that does not hold the pinned version (a rollout half way through its
        replicas) refuses before any work, and the call goes to the next replica (round robin)."""
        for attempt in range(1, self.settings.max_attempts + 1):
            try:
                return await method(request, timeout=hop.left(), metadata=hop.metadata)
            except grpc.aio.AioRpcError as exc:
                if attempt == self.settings.max_attempts or not _mismatch(exc):
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    def _infer_request(pre: pb.PreprocessResponse) -> oip.ModelInferRequest:
        infer_request = oip.ModelInferRequest(model_name=pre.model, model_version=pre.fingerprint)
        for name, value in pre.model_parameters.items():  # e.g. generation params, as the pre tier resolved them
            kind = value.WhichOneof("value")
            if kind is not None:
                setattr(infer_request.parameters[name], _PARAM_FIELDS[kind], getattr(value, kind))
        for tensor in pre.model_inputs:
            infer_request.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
            infer_request.raw_input_contents.append(tensor.raw)
        return infer_request

    @staticmethod
    def _check_version(infer: oip.ModelInferResponse, pre: pb.PreprocessResponse) -> None:
        if infer.model_version and infer.model_version != pre.fingerprint:
            raise BundleMismatch(
                f"bundle mismatch: preprocess serves {pre.fingerprint}, model serves {infer.model_version}"
            )

    async def _postprocess(
        self,
        request: pb.PredictRequest,
        pre: pb.PreprocessResponse,
        outputs: list[pb.Tensor],
        hop: Hop,
        partial: bool = False,
    ) -> pb.PostprocessResponse:
        post_request = pb.PostprocessRequest(
            model=pre.model,
            fingerprint=pre.fingerprint,
            records=_without_audio(request.records),
            params=request.params,
            context=pre.context,
            model_outputs=outputs,
            partial=partial,
            task_records=pre.task_records,
        )
        post = await self._call(self.post.Postprocess, post_request, hop)
        if post.fingerprint != pre.fingerprint:
            raise BundleMismatch(
                f"bundle mismatch: preprocess serves {pre.fingerprint}, postprocess serves {post.fingerprint}"
            )
        return post

    @staticmethod
    def _outputs(infer: oip.ModelInferResponse) -> list[pb.Tensor]:
        return [
            pb.Tensor(name=out.name, datatype=out.datatype, shape=out.shape, raw=raw)
            for out, raw in zip(infer.outputs, infer.raw_output_contents, strict=True)
        ]

    @staticmethod
    def _set_timings(
        context: grpc.aio.ServicerContext, stages: dict[str, float], total: float, infer: oip.ModelInferResponse
    ) -> None:
        context.set_trailing_metadata(
            (
                *((f"splitserve-{name}-us", str(int(seconds * 1e6))) for name, seconds in stages.items()),
                ("splitserve-gateway-us", str(int((total - sum(stages.values())) * 1e6))),
                *(
                    (f"splitserve-{name}-us", str(infer.parameters[f"{name}_us"].int64_param))
                    for name in ("queue", "inference")
                    if f"{name}_us" in infer.parameters
                ),
                *(
                    (("splitserve-input-tokens", str(infer.parameters["input_tokens"].int64_param)),)
                    if "input_tokens" in infer.parameters
                    else ()
                ),
            )
        )

    async def _predict(self, request: pb.PredictRequest, context: grpc.aio.ServicerContext) -> pb.PredictResponse:
        try:
            return await self._predict_once(request, context)
        except grpc.aio.AioRpcError as exc:
            # A tier no longer holds the version pinned at the last refresh (a replica the refresh
            # did not ask, a restarted one): look again, and run once more if the pick changed.
            if not _mismatch(exc):
                raise
            before = self.model_info(request.model).fingerprints[:1]
            await self.refresh()
            if self.model_info(request.model).fingerprints[:1] == before:
                raise
            return await self._predict_once(request, context)

    async def _predict_once(self, request: pb.PredictRequest, context: grpc.aio.ServicerContext) -> pb.PredictResponse:
        start = time.perf_counter()
        hop = self._hop(context)
        t0 = time.perf_counter()
        pre = await self._preprocess(request, hop)
        t1 = time.perf_counter()
        infer = await self._call(self.model.ModelInfer, self._infer_request(pre), hop)
        t2 = time.perf_counter()
        self._check_version(infer, pre)
        post = await self._postprocess(request, pre, self._outputs(infer), hop)
        t3 = time.perf_counter()
        stages = {"preprocess": t1 - t0, "model": t2 - t1, "postprocess": t3 - t2}
        self._set_timings(context, stages, time.perf_counter() - start, infer)
        return pb.PredictResponse(
            model=pre.model, fingerprint=pre.fingerprint, results=post.results, rows=post.rows, truncated=pre.truncated
        )

    async def _predict_stream(
        self, request: pb.PredictRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.PredictStreamResponse]:
        """Preprocess, then the model tier's ModelStreamInfer: the token chunks that arrived while
        the last delta was decoded are decoded together by the postprocess tier (the gateway has
        no tokenizer), and each record's new text is sent as a delta; then the final response."""
        start = time.perf_counter()
        hop = self._hop(context)
        pre = await self._preprocess(request, hop)
        t1 = time.perf_counter()
        call = self.model.ModelStreamInfer(iter([self._infer_request(pre)]), timeout=hop.left(), metadata=hop.metadata)
        chunks: asyncio.Queue[Any] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for message in call:
                    chunks.put_nowait(message)
                chunks.put_nowait(None)
            except grpc.aio.AioRpcError as exc:
                chunks.put_nowait(exc)

        reader = asyncio.create_task(pump())
        stream = TextStream(len(request.records))
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
                    self._check_version(response, pre)
                    if response.parameters["triton_final_response"].bool_param:
                        final = response
                    else:
                        stream.add(int(response.parameters["row"].int64_param), ids_of(response.raw_output_contents[0]))
                t = time.perf_counter()
                post = await self._postprocess(request, pre, [stream.tensor()], hop, partial=True)
                decode_s += time.perf_counter() - t
                for delta in stream.deltas(texts_of(post), request.records, done=final is not None):
                    yield pb.PredictStreamResponse(delta=delta)
        finally:
            reader.cancel()
            call.cancel()
        t2 = time.perf_counter()
        post = await self._postprocess(request, pre, self._outputs(final), hop)
        t3 = time.perf_counter()
        stages = {"preprocess": t1 - start, "model": t2 - t1 - decode_s, "postprocess": t3 - t2 + decode_s}
        self._set_timings(context, stages, time.perf_counter() - start, final)
        yield pb.PredictStreamResponse(
            final=pb.PredictResponse(
                model=pre.model,
                fingerprint=pre.fingerprint,
                results=post.results,
                rows=post.rows,
                truncated=pre.truncated,
            )
        )

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        await asyncio.gather(*(c.close() for c in self.channels))


@dataclass(frozen=True)
class Hop:
    """What bounds every downstream call of one request: its deadline, and the caller's
    metadata that travels on (trace context, authorization)."""

    deadline: float
    metadata: tuple[tuple[str, str], ...]

    def left(self) -> float:
        return max(self.deadline - time.monotonic(), 0.001)


class InlineStub:
    """A tier's servicer running in this process, called like its gRPC stub (`inline_stages`)."""

    def __init__(self, servicer: Any):
        self.servicer = servicer

    def __getattr__(self, method: str) -> Any:
        handler = getattr(self.servicer, method)

        async def call(request: Any, timeout: float | None = None, **_: Any) -> Any:  # metadata: no hop to carry it
            with tracing.span(f"{self.servicer.name} {method} (inline)"):
                return await handler(request, InlineContext(timeout))

        return call


def _mismatch(exc: grpc.aio.AioRpcError) -> bool:
    """A tier refused a version it does not hold (before doing any work)."""
    return exc.code() == grpc.StatusCode.FAILED_PRECONDITION and "bundle mismatch" in (exc.details() or "")


def _versions(answers: list[list[str]]) -> list[str]:
    """The versions every replica asked holds: the replicas' current ones first, in the order they came."""
    ordered = list(dict.fromkeys([a[0] for a in answers if a] + [f for a in answers for f in a[1:]]))
    return [f for f in ordered if all(f in a for a in answers)]


def _without_audio(records: Any) -> Any:
    """The records for the postprocess tier, which never reads audio: not sent a second time."""
    if not any(r.WhichOneof("audio") for r in records):
        return records
    out = []
    for record in records:
        copy = pb.Record()
        copy.CopyFrom(record)
        copy.ClearField("audio")
        out.append(copy)
    return out


class InlineContext:
    """What an inline stage reads of its call's context: the time left (`timeout` of the hop)."""

    def __init__(self, timeout: float | None):
        self.deadline = None if timeout is None else time.monotonic() + timeout

    def time_remaining(self) -> float | None:
        return None if self.deadline is None else max(self.deadline - time.monotonic(), 0.0)


def _read_tokens(path: str) -> list[bytes]:
    tokens = [line.strip().encode() for line in Path(path).read_text().splitlines() if line.strip()]
    if not tokens:
        raise ValueError(f"auth token file {path} has no tokens")
    return tokens
