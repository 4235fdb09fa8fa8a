"""10x overload and a flood of maximal requests: refusals come at once (RESOURCE_EXHAUSTED, counted
in records and tokens, never CANCELLED), admitted requests finish within their deadline, memory
stays bounded and is given back, health keeps answering."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import grpc
import numpy as np

from protos import splitserve_pb2 as pb
from protos import splitserve_pb2_grpc as pb_grpc
from splitserve.client import Client
from splitserve.core import codec
from splitserve.core.records import to_records
from tests.faults.kit import PARAMS, TEXTS, figure, health_ms

DEADLINE_S = 2.0
RECORDS = 8


def request(i: int) -> pb.PredictRequest:
    records = [{"id": str(k), "text": TEXTS[(i + k) % len(TEXTS)]} for k in range(RECORDS)]
    return pb.PredictRequest(records=codec.records_to_pb(to_records(records)), params=codec.params_to_struct(PARAMS))


def capacity(gateway: str, seconds: float = 3.0, clients: int = 4) -> float:
    """Requests per second the stack serves, closed loop."""
    stop = time.monotonic() + seconds

    def loop(c: int) -> int:
        done = 0
        with Client(gateway, timeout_s=30) as client:
            while time.monotonic() < stop:
                client.predict([TEXTS[(c + k) % len(TEXTS)] for k in range(RECORDS)], params=PARAMS)
                done += 1
        return done

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        return sum(pool.map(loop, range(clients))) / seconds


def percentiles(values: list[float]) -> str:
    if not values:
        return "-"
    p50, p99 = np.percentile(values, [50, 99])
    return f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"


def test_ten_times_overload(stack) -> None:
    stack.wait_serving()
    served = capacity(stack.addresses["gateway"])
    rate, seconds = 10 * served, 4.0
    rss_before = {t: stack.rss_mb(t) for t in ("gateway", "preprocess", "model", "postprocess")}
    outcomes: list[tuple[str, float]] = []
    lock = threading.Lock()
    messages = [request(i) for i in range(len(TEXTS))]  # built before the clock starts
    with grpc.insecure_channel(stack.addresses["gateway"]) as channel:
        predict = pb_grpc.GatewayStub(channel).Predict
        calls = []
        start = time.perf_counter()
        n = int(rate * seconds)
        for i in range(n):  # open loop: sent on schedule, whatever the answers
            time.sleep(max(0.0, start + i / rate - time.perf_counter()))
            sent = time.perf_counter()
            call = predict.future(messages[i % len(messages)], timeout=DEADLINE_S)

            def done(f: grpc.Future, sent: float = sent) -> None:
                elapsed = time.perf_counter() - sent
                code = f.code().name if f.exception() is not None else "OK"
                if code == "RESOURCE_EXHAUSTED" and not f.details().startswith("gateway"):
                    code = "RESOURCE_EXHAUSTED behind"  # a tier behind the gateway refused it, after queueing
                with lock:
                    outcomes.append((code, elapsed))

            call.add_done_callback(done)
            calls.append(call)
        offered_s = time.perf_counter() - start
        for call in calls:
            try:
                call.result(timeout=DEADLINE_S + 10)
            except grpc.RpcError:
                pass
        time.sleep(0.2)
    rss_after = {t: stack.rss_mb(t) for t in rss_before}
    codes = [c for c, _ in outcomes]
    by = {c: [s for k, s in outcomes if k == c] for c in set(codes)}
    ok, late = by.get("OK", []), by.get("DEADLINE_EXCEEDED", [])
    at_door, behind = by.get("RESOURCE_EXHAUSTED", []), by.get("RESOURCE_EXHAUSTED behind", [])
    refused = at_door + behind
    figure(
        f"10x overload: capacity {served:.0f} req/s ({RECORDS} records each), offered {n / offered_s:.0f} req/s "
        f"for {offered_s:.1f}s; {len(ok)} answered ({percentiles(ok)}), {len(refused)} refused RESOURCE_EXHAUSTED "
        f"({percentiles(refused)}; {len(at_door)} by the gateway: {percentiles(at_door)}, {len(behind)} by a tier "
        f"behind it: {percentiles(behind)}), {len(late)} past their {DEADLINE_S:.0f}s deadline, others "
        f"{sorted(set(codes) - {'OK', 'RESOURCE_EXHAUSTED', 'RESOURCE_EXHAUSTED behind', 'DEADLINE_EXCEEDED'})}"
    )
    figure(
        "10x overload RSS MB before -> after: "
        + ", ".join(f"{t} {rss_before[t]:.0f} -> {rss_after[t]:.0f}" for t in rss_before)
    )
    assert len(outcomes) == n
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED behind", "DEADLINE_EXCEEDED"}, sorted(
        set(codes)
    )  # never CANCELLED
    assert refused and ok
    # Issue 25: the gateway refuses what its tiers would refuse after queueing (it learns a ceiling
    # from their refusals); before, a quarter of the refusals came from the model tier, slowly.
    assert len(behind) <= 0.1 * len(refused), f"{len(behind)} of {len(refused)} refused behind the gateway"
    # Targets (refusals p99 <= 20 ms, no admitted request late) are for a quiet machine
    # (benchmarks/overload.py); here the stack, the load and other jobs share 2 cores: the bounds
    # are loose (a loaded AVX2 machine's), the figures printed.
    assert np.percentile(refused, 50) < 0.5 and np.percentile(refused, 99) < 2.0
    assert len(late) <= 0.2 * (len(ok) + len(late)), "admitted requests missed their deadline"
    for tier, before in rss_before.items():
        assert rss_after[tier] < before + 300, f"{tier} grew from {before:.0f} to {rss_after[tier]:.0f} MB"


def test_flood_of_maximal_requests(stack) -> None:
    """Requests of 512-token records (the model's maximum): the model tier runs them in parts of
    max_batch_tokens and gives the memory back; health answers throughout."""
    stack.wait_serving()
    texts = [f"{i} " + "lorem ipsum dolor sit amet " * 120 for i in range(16)]  # truncated to 512 tokens
    base = stack.rss_mb("model") / 2
    peak = base
    health: dict[str, float] = {}
    flooding = threading.Event()
    flooding.set()

    def watch() -> None:
        nonlocal peak
        while flooding.is_set():
            peak = max(peak, max(p.memory_info().rss / 2**20 for p in stack.processes()["model"]))
            for tier in ("gateway", "preprocess", "model", "postprocess"):
                address = stack.addresses[tier] if tier == "gateway" else stack.addresses[tier][0]
                health[tier] = max(health.get(tier, 0.0), health_ms(address))
            time.sleep(0.1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    t = time.perf_counter()

    def flood(_: int) -> int:
        with Client(stack.addresses["gateway"], timeout_s=300) as client:
            return len(client.predict(texts, params=PARAMS))

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        answered = list(pool.map(flood, range(6)))
    elapsed = time.perf_counter() - t
    flooding.clear()
    watcher.join()
    time.sleep(1.0)
    after = max(p.memory_info().rss / 2**20 for p in stack.processes()["model"])
    figure(
        f"flood: 6 requests x 16 records of 512 tokens in {elapsed:.1f}s; model replica RSS {base:.0f} MB before, "
        f"{peak:.0f} MB peak, {after:.0f} MB after; worst health "
        + ", ".join(f"{k} {v:.0f} ms" for k, v in health.items())
    )
    assert answered == [16] * 6
    assert peak < base + 1500 and after < base + 400, (base, peak, after)
    assert max(health.values()) < 2000
