"""The fault suite's kit: `splitserve up` as real processes on loopback (all-MiniLM-L6-v2, two replicas
of each tier), treated as a hostile user and a hostile machine would: replicas killed and stopped
under load, 10x overload, a flood of maximal requests, tiers from another bundle, fuzzed requests.
Every loop is bounded; the figures each test measures are printed at the end of the run (the
docs/operations.md, "What the fault suite measured", quotes the last run)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from splitserve.client import Client

FIGURES: list[str] = []  # one line per measurement, printed in the terminal summary
TEXTS = [f"sentence {i} about the beaches of Florida and the rivers of Georgia" for i in range(64)]
PARAMS = {"pooling": "mean"}


def figure(line: str) -> None:
    FIGURES.append(line)
    print(line)


@dataclass
class Up:
    proc: subprocess.Popen[str]
    addresses: dict[str, Any]
    expected: dict[str, np.ndarray]  # the embedding of each text in TEXTS, before any fault

    def processes(self) -> dict[str, list[psutil.Process]]:
        out: dict[str, list[psutil.Process]] = {}
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            try:
                cmd = " ".join(child.cmdline())
            except psutil.Error:
                continue
            for tier in ("preprocess", "model", "postprocess", "gateway"):
                if f"splitserve serve-{tier}" in cmd and child.status() != psutil.STATUS_ZOMBIE:
                    out.setdefault(tier, []).append(child)
        return out

    def rss_mb(self, tier: str) -> float:
        total = 0.0
        for p in self.processes().get(tier, []):
            try:
                total += p.memory_info().rss / 2**20
            except psutil.Error:
                pass
        return total

    def wait_serving(self, *tiers: str, timeout_s: float = 120) -> None:
        """Until every replica (of `tiers`, default all) answers SERVING (after a restart)."""
        deadline = time.monotonic() + timeout_s
        for tier in tiers or ("preprocess", "model", "postprocess"):
            for address in self.addresses[tier]:
                while not health_ok(address):
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{tier} replica {address} did not come back")
                    time.sleep(0.25)

    def check(self, result: list[dict[str, Any]], texts: list[str]) -> bool:
        """The results are the right ones (the embeddings before any fault, within float noise)."""
        return len(result) == len(texts) and all(
            np.allclose(r["embedding"], self.expected[t], atol=1e-4) for r, t in zip(result, texts)
        )


def health_ok(address: str, timeout_s: float = 2.0) -> bool:
    try:
        with grpc.insecure_channel(address) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
        return status.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def health_ms(address: str) -> float:
    t = time.perf_counter()
    with grpc.insecure_channel(address) as channel:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30)
    return (time.perf_counter() - t) * 1000


@pytest.fixture(scope="session")
def stack(minilm_bundle) -> Any:
    args = ["--replicas", "preprocess=2", "--replicas", "model=2", "--replicas", "postprocess=2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "splitserve", "up", minilm_bundle.bundle_uri, *args],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, "splitserve up exited before printing its addresses"
    addresses = json.loads(line)
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
    with Client(addresses["gateway"]) as client:
        results = client.predict(TEXTS, params=PARAMS)
    up = Up(proc, addresses, {t: np.asarray(r["embedding"]) for t, r in zip(TEXTS, results)})
    yield up
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
