"""A replica of each tier killed (SIGKILL) or stopped (SIGTERM) under load: every request is answered,
and answered right (the gateway retries a call a dying replica failed on another replica; a
stopping replica drains its calls); `up` brings the replica back on its port."""

from __future__ import annotations

import concurrent.futures
import signal
import time

import grpc
import pytest

from splitserve.client import Client
from tests.faults.kit import PARAMS, TEXTS, figure

CLIENTS = 4
CALLS = 80  # per fault, 4 records each


@pytest.mark.parametrize("tier", ["preprocess", "model", "postprocess"])  # one tier after another: each
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])  # has time to restart
def test_replica_fault_under_load(stack, tier, sig) -> None:
    stack.wait_serving(tier)
    victim = stack.processes()[tier][0]
    outcomes: list[str] = []

    def call(i: int) -> str:
        texts = [TEXTS[(i * 4 + k) % len(TEXTS)] for k in range(4)]
        with Client(stack.addresses["gateway"], timeout_s=30) as client:
            try:
                return "ok" if stack.check(client.predict(texts, params=PARAMS), texts) else "wrong"
            except grpc.RpcError as exc:
                return exc.code().name

    t = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(call, i) for i in range(CALLS)]
        time.sleep(0.5)
        victim.send_signal(sig)
        outcomes = [f.result() for f in futures]
    elapsed = time.perf_counter() - t
    lost, wrong = sum(o not in ("ok", "wrong") for o in outcomes), outcomes.count("wrong")
    name = "kill -9" if sig == signal.SIGKILL else "SIGTERM"
    figure(
        f"{name} of a {tier} replica under load: {len(outcomes)} requests in {elapsed:.1f}s, "
        f"{lost} lost, {wrong} wrong" + (f" ({sorted(set(outcomes) - {'ok'})})" if lost or wrong else "")
    )
    assert wrong == 0 and lost == 0, outcomes
    deadline = time.monotonic() + 120
    while len(stack.processes().get(tier, [])) < 2:  # `up` restarts it on its port
        assert time.monotonic() < deadline, f"the {tier} replica was not restarted"
        time.sleep(0.2)
