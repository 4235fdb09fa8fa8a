"""Every request is bounded before its work: characters at the gateway, tokens and every later
message's size at the preprocess tier (refused before the model runs), the client's message limit
the servers' own; stage work runs off the event loop (health answers while a tier tokenizes) and
stops at the deadline; the caller's token stays at the gateway. Issue 11: defects 1, 6, 8, 12, 13."""

from __future__ import annotations

import logging
import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from preprocess_svc.server import PreprocessTier
from protos import splitserve_pb2 as pb
from protos import splitserve_pb2_grpc as pb_grpc
from splitserve.client import Client
from tests.support.stack import Stack

WORDS = "the quick brown fox jumps over the lazy dog and keeps running far away "


def model_calls() -> float:
    return (
        REGISTRY.get_sample_value("splitserve_requests_total", {"tier": "model", "method": "ModelInfer", "code": "OK"})
        or 0.0
    )


def test_client_takes_responses_past_grpcs_default(minilm_bundle) -> None:
    """Defect 6: six records of 512 tokens with the default pooling (every token's vector, 4.7 MB)
    failed in the client, which kept gRPC's 4 MiB receive limit."""
    with Stack(minilm_bundle.local_dir) as stack, Client(stack.gateway) as client:
        results = client.predict([WORDS * 60] * 6)
    assert [np.asarray(r["embedding"]).shape for r in results] == [(512, 384)] * 6


@pytest.fixture(scope="module")
def small(tiny_bundles):
    """Small limits on every hop: 1 MiB messages, 2,000 tokens, 20,000 characters."""
    exported = tiny_bundles[("feature-extraction", "bert")]
    mib = 2**20
    tier = {"max_message_bytes": mib, "max_request_tokens": 2000}
    with Stack(
        exported.local_dir,
        pre=tier,
        model=tier,
        post=tier,
        gateway={"max_message_bytes": mib, "max_request_chars": 20_000},
    ) as stack:
        yield stack


def expect(stack: Stack, records: list, code: grpc.StatusCode, details: str) -> None:
    before = model_calls()
    with Client(stack.gateway) as client, pytest.raises(grpc.RpcError) as info:
        client.predict(records)
    assert info.value.code() == code, info.value.details()
    assert details in info.value.details()
    assert model_calls() == before, "refused after the model ran"


def test_token_budget_is_checked_before_the_model(small) -> None:
    """Defect 1: nothing bounded a request's tokens (rows x padded length) but its record count."""
    expect(
        small,
        [WORDS * 10] * 16,  # 16 rows of about 144 tokens
        grpc.StatusCode.INVALID_ARGUMENT,
        "tokens (2272); the limit is 2000 tokens (max_request_tokens)",
    )
    with Client(small.gateway) as client:  # within every limit: served
        assert len(client.predict([WORDS * 2] * 4)) == 4


def test_message_limit_is_checked_up_front(tiny_bundles) -> None:
    """Defect 6: a request whose model outputs (plus its records) would not fit a later hop's message
    limit failed after all the work (62-64 MiB requests at the gateway, ~84 long records of hidden
    states); every hop's limit is max_message_bytes, and the preprocess tier checks them all."""
    exported = tiny_bundles[("feature-extraction", "bert")]
    tier = {"max_message_bytes": 2**20}
    with Stack(exported.local_dir, pre=tier, model=tier, post=tier, gateway=tier) as stack:
        expect(
            stack,
            [WORDS * 12] * 80,  # 80 x 128 tokens x 32 floats = 1.25 MiB of hidden states
            grpc.StatusCode.INVALID_ARGUMENT,
            "the model outputs with the records would be",
        )


def test_characters_are_bounded_at_the_gateway(small) -> None:
    expect(
        small,
        ["x" * 5000] * 5,
        grpc.StatusCode.INVALID_ARGUMENT,
        "request has 25000 characters of text; the limit is 20000 (max_request_chars)",
    )


def test_health_answers_while_a_tier_tokenizes(tiny_bundles) -> None:
    """Defect 8: one request of 200 x 100k characters froze a preprocess replica for 8.3 s (health
    took 8,284 ms: a liveness probe would have killed it) and ignored its deadline. Stage work runs
    in threads; the deadline ends the call."""
    exported = tiny_bundles[("feature-extraction", "bert")]
    pre = {"max_text_chars": 200_000, "max_request_chars": 10_000_000}
    with Stack(exported.local_dir, pre=pre, gateway={"max_request_chars": 10_000_000}) as stack:
        latencies: list[float] = []
        done = threading.Event()

        def probe() -> None:
            with grpc.insecure_channel(stack.addresses["preprocess"]) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                while not done.is_set():
                    t = time.perf_counter()
                    health.Check(health_pb2.HealthCheckRequest(), timeout=30)
                    latencies.append(time.perf_counter() - t)
                    time.sleep(0.02)

        prober = threading.Thread(target=probe)
        prober.start()
        request = pb.PreprocessRequest(records=[pb.Record(id=str(i), text=WORDS * 2600) for i in range(12)])
        with grpc.insecure_channel(stack.addresses["preprocess"]) as channel:
            stub = pb_grpc.PreprocessStub(channel)
            t = time.perf_counter()
            stub.Preprocess(request, timeout=120)  # 2.2 M characters
            work_s = time.perf_counter() - t
            t = time.perf_counter()
            with pytest.raises(grpc.RpcError) as info:
                stub.Preprocess(request, timeout=0.3)
            deadline_s = time.perf_counter() - t
        done.set()
        prober.join()
    worst = max(latencies)
    print(
        f"\ntokenizing 2.2 M chars took {work_s:.2f}s; health answered {len(latencies)} checks meanwhile, "
        f"worst {worst * 1000:.0f} ms; a 0.3 s deadline answered in {deadline_s:.2f}s"
    )
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert worst < max(1.0, work_s / 3), f"health took {worst:.2f}s while a {work_s:.2f}s request tokenized"
    assert deadline_s < max(2.0, work_s / 2)


class RecordingPreprocess(PreprocessTier):
    """The preprocess tier, noting the metadata of each call it gets."""

    seen: list[dict[str, str]] = []

    async def Preprocess(self, request, context):  # noqa: N802 - the gRPC method's name
        self.seen.append(dict(context.invocation_metadata() or ()))
        return await super().Preprocess(request, context)


def test_callers_token_is_not_forwarded_and_deadline_ends_are_quiet(tiny_bundles, tmp_path, caplog) -> None:
    """Defect 12: the gateway forwarded the caller's bearer token to the tiers (in plaintext without
    --tier-tls-ca). Defect 13: calls that end at their deadline are logged without a traceback."""
    tokens = tmp_path / "tokens"
    tokens.write_text("s3cret\n")
    stack = Stack(tiny_bundles[("text-classification", "bert")].local_dir, gateway={"auth_token_file": str(tokens)})
    stack.settings[0] = (RecordingPreprocess, stack.settings[0][1])
    caplog.set_level(logging.INFO)
    with stack, Client(stack.gateway, token="s3cret") as client:
        client.predict(["Florida has nice beaches"])
        with Client(stack.gateway, token="s3cret", timeout_s=0.002) as hurried:
            for _ in range(20):
                with pytest.raises(grpc.RpcError):
                    hurried.predict([WORDS * 20] * 16)
        client.predict(["Florida has nice beaches"])
    assert RecordingPreprocess.seen and all("authorization" not in m for m in RecordingPreprocess.seen)
    ours = [r for r in caplog.records if r.name.startswith(("splitserve", "grpc"))]
    loud = [r for r in ours if r.levelno >= logging.WARNING or r.exc_info]
    assert not loud, [r.getMessage()[:200] for r in loud]
