"""Gateway gRPC server: `splitserve.v1.Gateway`, the one API clients call.

Predict = Preprocess -> ModelInfer (OIP) -> Postprocess. Tensors are forwarded as bytes,
never decoded here. The client's deadline (or `timeout_s`) bounds every hop; cancelling the
client's call cancels the hop in progress. Where each request's time went is sent back as
trailing metadata (`splitserve-<stage>-us`; `model` is the whole hop, `queue` and `inference` the
model tier's own split of it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import grpc

from gateway_svc.pool import open_channel
from gateway_svc.settings import GatewaySettings
from protos import grpc_predict_v2_pb2 as oip
from protos import grpc_predict_v2_pb2_grpc as oip_grpc
from protos import splitserve_pb2 as pb
from protos import splitserve_pb2_grpc as pb_grpc
from splitserve.errors import BundleMismatch, InvalidInput, ModelNotReady, Overloaded

log = logging.getLogger("splitserve.gateway")
FORWARDED_METADATA = ("traceparent", "tracestate", "authorization")
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

    def __init__(self, settings: GatewaySettings):
        self.settings = settings
        self.in_flight = 0
        self.info: pb.TierInfo | None = None
        self.channels: list[grpc.aio.Channel] = []

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_GatewayServicer_to_server(self, server)

    async def load(self) -> dict[str, Any]:
        s = self.settings
        pre, model, post = (
            open_channel(a, s.max_attempts, s.max_message_bytes) for a in (s.preprocess, s.model, s.postprocess)
        )
        self.channels = [pre, model, post]
        self.pre = pb_grpc.PreprocessStub(pre)
        self.model = oip_grpc.GRPCInferenceServiceStub(model)
        self.post = pb_grpc.PostprocessStub(post)
        # Wait for every tier, and say so loudly if they serve different bundles.
        pre_info = await self.pre.Info(pb.TierInfoRequest(), wait_for_ready=True, timeout=120)
        post_info = await self.post.Info(pb.TierInfoRequest(), wait_for_ready=True, timeout=120)
        meta = await self.model.ModelMetadata(
            oip.ModelMetadataRequest(name=pre_info.model), wait_for_ready=True, timeout=120
        )
        fingerprints = {pre_info.fingerprint, post_info.fingerprint, *meta.versions}
        if len(fingerprints) > 1:
            log.error(
                "tiers serve different bundles %s; requests will be refused until they agree", sorted(fingerprints)
            )
        self.info = pb.TierInfo(
            tier=self.name, model=pre_info.model, task=pre_info.task, fingerprint=pre_info.fingerprint
        )
        return {"model": pre_info.model, "task": pre_info.task, "fingerprint": pre_info.fingerprint}

    async def Info(self, request: pb.TierInfoRequest, context: grpc.aio.ServicerContext) -> pb.TierInfo:
        if self.info is None:
            raise ModelNotReady("gateway is still connecting to its tiers")
        return self.info

    async def Predict(self, request: pb.PredictRequest, context: grpc.aio.ServicerContext) -> pb.PredictResponse:
        if self.info is None:
            raise ModelNotReady("gateway is still connecting to its tiers")
        if not request.records:
            raise InvalidInput("request has no records")
        if len(request.records) > self.settings.max_records:
            raise InvalidInput(f"request has {len(request.records)} records; the limit is {self.settings.max_records}")
        if self.in_flight >= self.settings.max_in_flight:
            raise Overloaded(f"gateway has {self.in_flight} requests in flight (max_in_flight); retry later")
        self.in_flight += 1
        try:
            return await self._predict(request, context)
        finally:
            self.in_flight -= 1

    async def _predict(self, request: pb.PredictRequest, context: grpc.aio.ServicerContext) -> pb.PredictResponse:
        start = time.perf_counter()
        remaining = context.time_remaining()
        deadline = time.monotonic() + (remaining if remaining is not None else self.settings.timeout_s)
        metadata = tuple((k, v) for k, v in context.invocation_metadata() or () if k in FORWARDED_METADATA)

        def left() -> float:
            return max(deadline - time.monotonic(), 0.001)

        t0 = time.perf_counter()
        pre = await self.pre.Preprocess(
            pb.PreprocessRequest(model=request.model, records=request.records, params=request.params),
            timeout=left(),
            metadata=metadata,
        )
        t1 = time.perf_counter()
        infer_request = oip.ModelInferRequest(model_name=pre.model, model_version=pre.fingerprint)
        for name, value in pre.model_parameters.items():  # e.g. generation params, as the pre tier resolved them
            kind = value.WhichOneof("value")
            if kind is not None:
                setattr(infer_request.parameters[name], _PARAM_FIELDS[kind], getattr(value, kind))
        for tensor in pre.model_inputs:
            infer_request.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
            infer_request.raw_input_contents.append(tensor.raw)
        infer = await self.model.ModelInfer(infer_request, timeout=left(), metadata=metadata)
        t2 = time.perf_counter()
        if infer.model_version and infer.model_version != pre.fingerprint:
            raise BundleMismatch(
                f"bundle mismatch: preprocess serves {pre.fingerprint}, model serves {infer.model_version}"
            )
        post_request = pb.PostprocessRequest(
            model=pre.model,
            fingerprint=pre.fingerprint,
            records=request.records,
            params=request.params,
            context=pre.context,
        )
        for out, raw in zip(infer.outputs, infer.raw_output_contents, strict=True):
            post_request.model_outputs.add(name=out.name, datatype=out.datatype, shape=out.shape, raw=raw)
        post = await self.post.Postprocess(post_request, timeout=left(), metadata=metadata)
        t3 = time.perf_counter()
        if post.fingerprint != pre.fingerprint:
            raise BundleMismatch(
                f"bundle mismatch: preprocess serves {pre.fingerprint}, postprocess serves {post.fingerprint}"
            )
        hops = (t1 - t0) + (t2 - t1) + (t3 - t2)
        context.set_trailing_metadata(
            (
                ("splitserve-preprocess-us", str(int((t1 - t0) * 1e6))),
                ("splitserve-model-us", str(int((t2 - t1) * 1e6))),
                ("splitserve-postprocess-us", str(int((t3 - t2) * 1e6))),
                ("splitserve-gateway-us", str(int((time.perf_counter() - start - hops) * 1e6))),
                *(
                    (f"splitserve-{name}-us", str(infer.parameters[f"{name}_us"].int64_param))
                    for name in ("queue", "inference")
                    if f"{name}_us" in infer.parameters
                ),
            )
        )
        return pb.PredictResponse(model=pre.model, fingerprint=pre.fingerprint, results=post.results)

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.channels))
