"""Health says NOT_SERVING until a tier has loaded (each task's PyTorch-backend parity is in
tests/tasks/)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from model_svc.server import ModelTier
from model_svc.settings import ModelSettings
from splitserve.core.grpc_server import start


async def test_not_serving_until_loaded(tiny_bundles) -> None:
    settings = ModelSettings(bundle_uri=tiny_bundles[("feature-extraction", "bert")].local_dir)
    tier = ModelTier(settings)
    running = await start(tier, settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            before = await health.Check(health_pb2.HealthCheckRequest(service=""))
            assert before.status == health_pb2.HealthCheckResponse.NOT_SERVING
            from protos import grpc_predict_v2_pb2 as oip
            from protos import grpc_predict_v2_pb2_grpc as oip_grpc

            stub = oip_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.ModelInfer(oip.ModelInferRequest(model_name="x"))
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "still loading" in info.value.details()
            assert not (await stub.ServerReady(oip.ServerReadyRequest())).ready

            await tier.load()
            await running.set_serving(True)
            after = await health.Check(health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService"))
            assert after.status == health_pb2.HealthCheckResponse.SERVING
            assert (await stub.ServerReady(oip.ServerReadyRequest())).ready
    finally:
        await running.stop(0.1)
        await tier.close()
    await asyncio.sleep(0)
