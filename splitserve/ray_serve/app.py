"""The Ray Serve application of a serving bundle: the preprocess, model and postprocess tiers as
deployments (`TierReplica`, one per tier, each with its own replicas and autoscaling), and the
gateway as the ingress (`GatewayIngress`), answering the REST and OpenAI-compatible routes over
Serve's HTTP proxy and `splitserve.v1.Gateway` over Serve's gRPC proxy.

Nothing here is a second copy of the tiers: each replica hosts the tier's own servicer
(`PreprocessTier`, `ModelTier`, `PostprocessTier`: loading the bundle into its host's bundle cache,
versions, limits, batching), and the ingress runs the gateway's transport-free request path
(`gateway_svc.orchestrator.Gateway`) over Serve handles (`splitserve.ray_serve.handles`) instead of
gRPC channels. `serve deploy` / `serve run` / KubeRay's RayService build it from its import path,
`splitserve.ray_serve.app:build`, with the args `splitserve ray` writes
(`splitserve.ray_serve.config`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from ray import serve

from gateway_svc.auth import Tokens
from gateway_svc.inline import InlineContext
from gateway_svc.orchestrator import Call, Gateway
from gateway_svc.rest import build_app
from gateway_svc.settings import GatewaySettings
from protos import splitserve_pb2 as pb
from splitserve.core.status import status_of
from splitserve.core.tokenizer import keep_torch_out
from splitserve.ray_serve.config import SERVE_ROUTED, check_settings
from splitserve.ray_serve.handles import HandleStub, Refusal, Wire
from splitserve.ray_serve.proxy import aliased

TIERS = ("preprocess", "model", "postprocess")
# The tiers' RPCs the gateway calls (a tier replica answers no other).
RPCS = {"Info", "Preprocess", "Postprocess", "ModelInfer", "ModelMetadata", "ModelStreamInfer"}
aliased()  # the gRPC proxy's requests unpickle here


def tier_servicer(tier: str, bundle_uri: str, settings: dict[str, Any]) -> Any:
    """The tier's own servicer (not loaded yet); `settings` over its SPLITSERVE_<TIER>_* env. A CPU
    tier's replica runs without torch, as its `serve-*` process does (hundreds of MB less)."""
    if tier != "model":
        keep_torch_out()
    if tier == "preprocess":
        from preprocess_svc.server import PreprocessTier
        from preprocess_svc.settings import PreprocessSettings

        return PreprocessTier(PreprocessSettings(bundle_uri=bundle_uri, **settings))
    if tier == "model":
        from model_svc.server import ModelTier
        from model_svc.settings import ModelSettings

        return ModelTier(ModelSettings(bundle_uri=bundle_uri, **settings))
    if tier == "postprocess":
        from postprocess_svc.server import PostprocessTier
        from postprocess_svc.settings import PostprocessSettings

        return PostprocessTier(PostprocessSettings(bundle_uri=bundle_uri, **settings))
    raise ValueError(f"no tier {tier!r}; the tiers are {', '.join(TIERS)}")


@serve.deployment
class TierReplica:
    """One replica of a tier: the tier's servicer, loaded from the bundle, called through a handle."""

    async def __init__(self, tier: str, bundle_uri: str, settings: dict[str, Any]):  # type: ignore[misc]
        self.servicer = tier_servicer(tier, bundle_uri, settings)
        await self.servicer.load()

    async def call(self, method: str, request: Wire, timeout: float | None) -> Wire | Refusal:
        """The tier's answer to one RPC, or its error status (`Refusal`)."""
        if method not in RPCS:
            return Refusal("UNIMPLEMENTED", f"{self.servicer.name} answers no {method!r} here")
        try:
            return Wire.of(await getattr(self.servicer, method)(request.message(), InlineContext(timeout)))
        except Exception as exc:  # noqa: BLE001 - mapped by the one table, as the gRPC interceptor does
            code, details = status_of(exc)
            return Refusal(code.name, details)

    async def stream(self, method: str, requests: list[Wire], timeout: float | None) -> AsyncIterator[Wire | Refusal]:
        """The model tier's streamed answer, message by message; an error ends it (`Refusal`)."""

        async def each() -> AsyncIterator[Any]:
            for request in requests:
                yield request.message()

        try:
            async for message in self.servicer.ModelStreamInfer(each(), InlineContext(timeout)):
                yield Wire.of(message)
        except Exception as exc:  # noqa: BLE001 - as in `call`
            code, details = status_of(exc)
            yield Refusal(code.name, details)

    def check_health(self) -> None:
        if not self.servicer.versions:
            raise RuntimeError(f"{self.servicer.name}: no bundle loaded")


@serve.deployment
@serve.ingress()
class GatewayIngress:
    """The gateway: REST/OpenAI routes (HTTP proxy) and the gateway's gRPC API (gRPC proxy), both
    calling the one request path over the tiers' handles."""

    async def __init__(self, preprocess: Any, model: Any, postprocess: Any, settings: dict[str, Any]):  # type: ignore[misc]
        keep_torch_out()
        s = GatewaySettings(**{**settings, **{t: SERVE_ROUTED for t in TIERS}})
        self.gateway = Gateway(s)
        tokens = Tokens(s.auth_token_file) if s.auth_token_file else None
        pre, mid, post = (HandleStub(h, t) for h, t in zip((preprocess, model, postprocess), TIERS, strict=True))
        self.gateway.connect(pre, mid, post, tokens)
        await self.gateway.versions.refresh(wait=True)
        self.refresher = asyncio.create_task(self.gateway.versions.refresh_forever())

    def __serve_build_asgi_app__(self) -> Any:
        """HTTP: the gateway's REST door (`gateway_svc.rest`), the same routes as `serve-gateway --rest-port`."""
        return build_app(self.gateway)

    # splitserve.v1.Gateway, through Serve's gRPC proxy (`grpc_options.grpc_servicer_functions`).
    async def Info(self, request: pb.TierInfoRequest, grpc_context: Any = None) -> pb.TierInfo:
        try:
            return await self.gateway.info(request.model, _call(grpc_context))
        except Exception as exc:  # noqa: BLE001 - the status a gRPC gateway would send
            return _refused(grpc_context, exc, pb.TierInfo())

    async def Predict(self, request: pb.PredictRequest, grpc_context: Any = None) -> pb.PredictResponse:
        call = _call(grpc_context)
        try:
            response = await self.gateway.predict(request, call)
        except Exception as exc:  # noqa: BLE001 - as in Info
            return _refused(grpc_context, exc, pb.PredictResponse())
        if grpc_context is not None:
            grpc_context.set_trailing_metadata(list(call.trailing))
        return response

    async def PredictStream(
        self, request: pb.PredictRequest, grpc_context: Any = None
    ) -> AsyncIterator[pb.PredictStreamResponse]:
        try:
            async for event in self.gateway.predict_stream(request, _call(grpc_context)):
                yield event
        except Exception as exc:  # noqa: BLE001 - as in Info
            _refused(grpc_context, exc, None)

    def check_health(self) -> None:
        if not self.gateway.ready:
            raise RuntimeError("gateway: not connected to its tiers")


def _call(grpc_context: Any) -> Call:
    """A call through Serve's gRPC proxy as the request path sees it: its metadata (the proxy
    passes no deadline: the gateway's `timeout_s` bounds it)."""
    if grpc_context is None:
        return Call()
    return Call(tuple(grpc_context.invocation_metadata() or ()), None)


def _refused(grpc_context: Any, exc: BaseException, empty: Any) -> Any:
    """Answer with the error's status (the one table), as the gRPC gateway's interceptor does."""
    if grpc_context is None:
        raise exc
    code, details = status_of(exc)
    grpc_context.set_code(code)
    grpc_context.set_details(details)
    return empty


def build(args: dict[str, Any]) -> Any:
    """The application (Serve's application builder): `args` as `splitserve ray` writes them:
    `bundle_uri`, and `settings`: per tier (and `gateway`), settings over the SPLITSERVE_* env."""
    settings = args.get("settings") or {}
    check_settings(args["bundle_uri"], settings)  # a wrong one fails the deploy, not each replica
    replica: Any = TierReplica  # a serve.Deployment (the decorator's type is lost on mypy)
    ingress: Any = GatewayIngress
    tiers = [replica.options(name=t).bind(t, args["bundle_uri"], settings.get(t, {})) for t in TIERS]
    return ingress.options(name="gateway").bind(*tiers, settings.get("gateway", {}))
