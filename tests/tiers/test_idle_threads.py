"""Latency when idle, throughput when busy (issue 25): a model replica runs a batch that runs alone
on every core it is given (its idle session) and batches beside others on one thread each,
several at once; the answers are the same either way, within float noise."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import grpc
import numpy as np
from prometheus_client import REGISTRY

from model_svc.server import ModelTier
from model_svc.settings import ModelSettings
from model_svc.threads import ThreadPlan, plan, usable_cores
from protos import grpc_predict_v2_pb2 as oip
from protos import grpc_predict_v2_pb2_grpc as oip_grpc
from splitserve.core.grpc_server import start
from tests.tiers.test_batching import Echo, assert_echo, batcher, item


def runs(path: str) -> float:
    return REGISTRY.get_sample_value("splitserve_model_batch_runs_total", {"path": path}) or 0.0


def test_usable_cores_follow_omp_num_threads(monkeypatch) -> None:
    """Ray sets OMP_NUM_THREADS to a replica's CPUs: a replica given 1 of a node's cores has no idle path."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert usable_cores() == 1
    assert plan("onnx", "cpu", 0, 0, 0) == ThreadPlan(1, 0, 1)


def test_thread_plan() -> None:
    one = plan("onnx", "cpu", 0, 4, 0)  # the defaults, on a replica told its idle threads
    assert (one.threads, one.idle_threads) == (1, 4) and one.lanes >= 1
    assert plan("onnx", "cpu", 2, 2, 3) == plan("onnx", "cpu", 2, 1, 3)  # no more threads when idle: no idle path
    assert plan("onnx", "cpu", 2, 2, 3).idle_threads == 0
    assert plan("torch", "cpu", 0, 4, 0) == plan("onnx", "cuda", 0, 4, 0)  # as given, one batch at a time
    assert plan("torch", "cpu", 0, 4, 0).lanes == 1 and plan("torch", "cpu", 0, 4, 0).idle_threads == 0


async def test_batches_beside_others_run_at_once_a_lone_one_alone() -> None:
    """Two lanes: two batches run at the same time (each waits for the other at a barrier: run
    one after the other, they would time out); a lone request runs by `infer_alone`."""
    echo, alone_calls = Echo(), []
    barrier = threading.Barrier(2, timeout=10)

    def infer(inputs):
        barrier.wait()
        return echo(inputs)

    def infer_alone(inputs):
        alone_calls.append(inputs["input_ids"].shape)
        return echo(inputs)

    items = [item(1, 1, 3), item(2, 1, 30)]  # lengths the padding limit keeps apart: two batches
    with concurrent.futures.ThreadPoolExecutor(2) as executor:
        async with batcher(
            infer, max_pad_fraction=0.0, executor=executor, infer_alone=infer_alone, lanes=2, max_queue_delay_ms=100
        ) as b:
            together = await asyncio.gather(*(b.submit(i) for i in items))
            lone = await b.submit(item(3, 2, 5))
    assert [r.alone for r in together] == [False, False]
    assert lone.alone and alone_calls == [(2, 5)]
    for inputs, result in zip(items, together, strict=True):
        assert_echo(inputs, result.outputs)
    assert_echo(item(3, 2, 5), lone.outputs)


def infer_request(length: int, model: str) -> oip.ModelInferRequest:
    ids = (np.arange(length, dtype=np.int64) * 7 + 5)[None, :] % 200 + 5
    request = oip.ModelInferRequest(model_name=model)
    for name, array in (("input_ids", ids), ("attention_mask", np.ones_like(ids)), ("token_type_ids", 0 * ids)):
        request.inputs.add(name=name, datatype="INT64", shape=list(array.shape))
        request.raw_input_contents.append(array.astype("<i8").tobytes())
    return request


def outputs(response: oip.ModelInferResponse) -> np.ndarray:
    return np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(list(response.outputs[0].shape))


async def test_model_tier_picks_its_threads_per_batch(tiny_bundles) -> None:
    """From a real server: requests one at a time run on the idle threads (2), requests queued
    together (lengths the padding limit keeps apart: one batch each) on one thread each; the
    response says which (`intra_op_threads`), the metric counts them, the answers agree."""
    exported = tiny_bundles[("feature-extraction", "bert")]
    settings = ModelSettings(
        bundle_uri=exported.local_dir,
        port=0,
        intra_op_threads=1,
        idle_threads=2,
        parallel_batches=2,
        max_queue_delay_ms=500,  # the 4 sent together meet in one window even on a loaded machine
        max_pad_fraction=0.0,
    )
    tier = ModelTier(settings)
    running = await start(tier, settings)
    try:
        await tier.load()
        await running.set_serving(True)
        model = tier.ready().name
        backend = tier.ready().runtime.backend  # two sessions of one graph: 1 thread, and 2 for a batch alone
        assert backend.session.get_session_options().intra_op_num_threads == 1
        assert backend.idle_session.get_session_options().intra_op_num_threads == 2
        requests = [infer_request(n, model) for n in (3, 9, 17, 30)]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = oip_grpc.GRPCInferenceServiceStub(channel)
            alone_before, beside_before = runs("alone"), runs("beside")
            one_by_one = [await stub.ModelInfer(r) for r in requests]
            assert runs("alone") - alone_before == len(requests)
            together = await asyncio.gather(*(stub.ModelInfer(r) for r in requests))
            assert runs("beside") - beside_before == len(requests)
    finally:
        await running.stop(0.5)
        await tier.close()
    assert [r.parameters["intra_op_threads"].int64_param for r in one_by_one] == [2] * len(requests)
    assert [r.parameters["intra_op_threads"].int64_param for r in together] == [1] * len(requests)
    for a, b in zip(one_by_one, together, strict=True):
        np.testing.assert_allclose(outputs(a), outputs(b), atol=1e-5, rtol=1e-4)
