"""Gateway gRPC server: `splitserve.v1.Gateway`, the one API clients call.

A thin door: each RPC becomes a transport-free `Call` and goes to the request path
(`gateway_svc.orchestrator.Gateway`): Predict = Preprocess -> ModelInfer (OIP) -> Postprocess;
Rerank and Score run pairs through Predict (`gateway_svc.rerank`); Tokenize and Decode go to the
preprocess tier, which holds the tokenizer.
Where each request's time went is sent back as trailing metadata (`gateway_svc.timing`). With
`inline_stages`, the preprocess and postprocess stages run in this process (`gateway_svc.inline`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from gateway_svc.auth import Tokens
from gateway_svc.inline import InlineStub
from gateway_svc.orchestrator import Call, Gateway
from gateway_svc.pool import channel_credentials, connection_options
from gateway_svc.pool import open_channel as open_tier_channel
from gateway_svc.rerank import rerank, score
from gateway_svc.settings import GatewaySettings
from protos import grpc_predict_v2_pb2_grpc as oip_grpc
from protos import splitserve_pb2 as pb
from protos import splitserve_pb2_grpc as pb_grpc


class GatewayTier(pb_grpc.GatewayServicer):
    name = "gateway"
    service_names = [pb.DESCRIPTOR.services_by_name["Gateway"].full_name]

    def __init__(self, settings: GatewaySettings, inline_servicers: tuple[Any, Any] | None = None):
        """`inline_servicers`: with `inline_stages`, the preprocess and postprocess tiers' servicers
        to run here (not loaded yet; `load` loads them)."""
        if (settings.inline_stages is not None) != (inline_servicers is not None):
            raise ValueError("inline_stages needs the preprocess and postprocess servicers handed in, and only then")
        self.settings = settings
        self.inline_servicers = inline_servicers
        self.gateway = Gateway(settings)
        self.channels: list[grpc.aio.Channel] = []
        self._refresher: asyncio.Task[None] | None = None

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_GatewayServicer_to_server(self, server)

    def rest_app(self) -> Any:
        """The REST door beside the gRPC port (`rest_port`): the same request path, over HTTP (gateway_svc.rest)."""
        from gateway_svc.rest import build_app

        return build_app(self.gateway)

    async def load(self) -> dict[str, Any]:
        self._connect()
        if self.inline_servicers is not None:
            await asyncio.gather(*(servicer.load() for servicer in self.inline_servicers))
        versions = self.gateway.versions
        await versions.refresh(wait=True)  # wait for every tier
        assert versions.info is not None
        self._refresher = asyncio.create_task(versions.refresh_forever())
        return {"model": versions.info.model, "task": versions.info.task, "fingerprint": versions.info.fingerprint}

    def _connect(self) -> None:
        """Open the channels to the tiers and hand the request path their stubs."""
        s = self.settings
        tokens = Tokens(s.auth_token_file) if s.auth_token_file else None
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
        pre: Any
        post: Any
        if self.inline_servicers is not None:
            pre, post = (InlineStub(servicer) for servicer in self.inline_servicers)
        else:
            pre_channel, post_channel = open_channel(s.preprocess), open_channel(s.postprocess)
            self.channels += [pre_channel, post_channel]
            pre, post = pb_grpc.PreprocessStub(pre_channel), pb_grpc.PostprocessStub(post_channel)
        self.gateway.connect(pre, oip_grpc.GRPCInferenceServiceStub(model), post, tokens)

    async def Info(self, request: pb.TierInfoRequest, context: grpc.aio.ServicerContext) -> pb.TierInfo:
        return await self.gateway.info(request.model, _call(context))

    async def Predict(self, request: pb.PredictRequest, context: grpc.aio.ServicerContext) -> pb.PredictResponse:
        call = _call(context)
        response = await self.gateway.predict(request, call)
        context.set_trailing_metadata(call.trailing)
        return response

    async def PredictStream(
        self, request: pb.PredictRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.PredictStreamResponse]:
        call = _call(context)
        async for event in self.gateway.predict_stream(request, call):
            if event.WhichOneof("event") == "final":
                context.set_trailing_metadata(call.trailing)
            yield event

    async def Rerank(self, request: pb.RerankRequest, context: grpc.aio.ServicerContext) -> pb.Scores:
        call = _call(context)
        response = await rerank(self.gateway, request, call)
        context.set_trailing_metadata(call.trailing)
        return response

    async def Score(self, request: pb.ScoreRequest, context: grpc.aio.ServicerContext) -> pb.Scores:
        call = _call(context)
        response = await score(self.gateway, request, call)
        context.set_trailing_metadata(call.trailing)
        return response

    async def Tokenize(self, request: pb.TokenizeRequest, context: grpc.aio.ServicerContext) -> pb.TokenizeResponse:
        return await self.gateway.tokenize(request, _call(context))

    async def Decode(self, request: pb.DecodeRequest, context: grpc.aio.ServicerContext) -> pb.DecodeResponse:
        return await self.gateway.decode(request, _call(context))

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        await asyncio.gather(*(c.close() for c in self.channels))


def _call(context: grpc.aio.ServicerContext) -> Call:
    """A gRPC call as the request path sees it: its metadata and its deadline."""
    left = context.time_remaining()
    return Call(tuple(context.invocation_metadata() or ()), None if left is None else time.monotonic() + left)
