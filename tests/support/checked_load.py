"""The closed loop that tests/support/netns_load.py and tests/support/ray_load.py run: every text
answered once first (the answers to hold the others to), then `{"phase": "warm"}` printed; then
CONCURRENCY workers send requests of two records each until SECONDS pass (or `stop` is set), each
answer checked against the warm-up's (ids in order, vectors within 1e-4). Returns requests, lost
(failed with any status), wrong (answered, but not as in the warm-up), the failures' codes, each
failure (its time.time(), code and details) and the slowest request. Imported by those scripts as
a sibling module (they run as `python tests/support/SCRIPT.py`)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import grpc

from splitserve.client import Client

PARAMS = {"pooling": "mean", "normalize": True}


def texts(n: int) -> list[str]:
    return [f"sentence {i} about {topic}" for i, topic in enumerate(["Paris", "rivers", "music", "trains"] * (n // 4))]


class Predicts(Protocol):
    def predict(self, records: list[Any], params: dict) -> list[dict]: ...


def failure_code(exc: Exception) -> tuple[str, str]:
    """(code, details) of a failed request: the gRPC status, else the exception's own `code`
    attribute (a REST failure's), else its type."""
    if isinstance(exc, grpc.RpcError):
        return exc.code().name, exc.details() or ""
    code = getattr(exc, "code", None)
    return (code if isinstance(code, str) else type(exc).__name__), str(exc)


def run(
    target: str,
    seconds: float,
    concurrency: int,
    sentences: list[str],
    stop: threading.Event | None = None,
    client_for: Callable[[int, Client], Predicts] = lambda worker, grpc_client: grpc_client,
) -> dict[str, Any]:
    """`client_for(worker, grpc_client)`: what worker `worker` sends with (its gRPC client by default)."""
    with Client(target, timeout_s=30) as client:
        expected = {t: client.predict([t], params=PARAMS)[0]["embedding"] for t in sentences}
    print(json.dumps({"phase": "warm"}), flush=True)
    stop = stop or threading.Event()
    lock = threading.Lock()
    report: dict[str, Any] = {"requests": 0, "lost": 0, "wrong": 0, "codes": {}, "failures": [], "slowest_s": 0.0}
    end = time.monotonic() + seconds

    def work(worker: int) -> None:
        i = worker
        with Client(target, timeout_s=30) as grpc_client:
            client = client_for(worker, grpc_client)
            while time.monotonic() < end and not stop.is_set():
                pair = [sentences[i % len(sentences)], sentences[(i * 7 + 3) % len(sentences)]]
                records = [{"id": f"{worker}-{i}-{k}", "text": t} for k, t in enumerate(pair)]
                i += concurrency
                start = time.monotonic()
                try:
                    results = client.predict(records, params=PARAMS)
                    ok = [r["id"] for r in results] == [r["id"] for r in records] and all(
                        max(abs(a - b) for a, b in zip(r["embedding"], expected[t], strict=True)) <= 1e-4
                        for r, t in zip(results, pair, strict=True)
                    )
                    outcome, code, details = ("ok" if ok else "wrong"), "", ""
                except Exception as exc:  # noqa: BLE001 - every failure counts as lost
                    outcome, (code, details) = "lost", failure_code(exc)
                with lock:
                    report["requests"] += 1
                    report["slowest_s"] = round(max(report["slowest_s"], time.monotonic() - start), 3)
                    if outcome != "ok":
                        report[outcome] += 1
                    if outcome == "lost":
                        report["codes"][code] = report["codes"].get(code, 0) + 1
                        report["failures"].append((time.time(), code, details[:200]))

    threads = [threading.Thread(target=work, args=(w,)) for w in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return report
