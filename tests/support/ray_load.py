"""Load for tests/cli/test_ray_cluster.py, run on the client host:
`python tests/support/ray_load.py TARGET SECONDS CONCURRENCY`.

Every text once first (the answers to hold the others to), then `{"phase": "warm"}`; then
closed-loop requests (gRPC, through Serve's proxy) of two records each for SECONDS, each answer
checked against the warm-up's (ids in order, vectors within 1e-4); then one JSON line: requests,
lost (failed with any status), wrong (answered, but not as in the warm-up), the failures' codes,
each failure (its time.time(), code and details) and the slowest request."""

from __future__ import annotations

import json
import sys
import threading
import time

import grpc

from splitserve.client import Client

TEXTS = [f"sentence {i} about {topic}" for i, topic in enumerate(["Paris", "rivers", "music", "trains"] * 8)]
PARAMS = {"pooling": "mean", "normalize": True}


def main(target: str, seconds: float, concurrency: int) -> None:
    with Client(target, timeout_s=30) as client:
        expected = {t: client.predict([t], params=PARAMS)[0]["embedding"] for t in TEXTS}
    print(json.dumps({"phase": "warm"}), flush=True)
    lock = threading.Lock()
    counts = {"requests": 0, "lost": 0, "wrong": 0}
    codes: dict[str, int] = {}
    failures: list[tuple[float, str, str]] = []
    slowest = [0.0]
    end = time.monotonic() + seconds

    def work(worker: int) -> None:
        i = worker
        with Client(target, timeout_s=30) as client:
            while time.monotonic() < end:
                texts = [TEXTS[i % len(TEXTS)], TEXTS[(i * 7 + 3) % len(TEXTS)]]
                records = [{"id": f"{worker}-{i}-{k}", "text": t} for k, t in enumerate(texts)]
                i += concurrency
                start = time.monotonic()
                try:
                    results = client.predict(records, params=PARAMS)
                    ok = [r["id"] for r in results] == [r["id"] for r in records] and all(
                        max(abs(a - b) for a, b in zip(r["embedding"], expected[t], strict=True)) <= 1e-4
                        for r, t in zip(results, texts, strict=True)
                    )
                    outcome = "ok" if ok else "wrong"
                except Exception as exc:  # noqa: BLE001 - every failure counts as lost
                    outcome = "lost"
                    code = exc.code().name if isinstance(exc, grpc.RpcError) else type(exc).__name__
                    details = (exc.details() if isinstance(exc, grpc.RpcError) else str(exc)) or ""
                with lock:
                    counts["requests"] += 1
                    slowest[0] = max(slowest[0], time.monotonic() - start)
                    if outcome != "ok":
                        counts[outcome] += 1
                    if outcome == "lost":
                        codes[code] = codes.get(code, 0) + 1
                        failures.append((time.time(), code, details[:200]))

    threads = [threading.Thread(target=work, args=(w,)) for w in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = {**counts, "codes": codes, "failures": failures, "slowest_s": round(slowest[0], 3)}
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]))
