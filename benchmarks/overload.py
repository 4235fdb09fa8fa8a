"""Refusals at 10x overload: `splitserve up` on a bundle (all-MiniLM-L6-v2 by default; two
replicas of each tier, as the fault suite runs it), its capacity measured closed loop, then ten
times that offered open loop (requests sent on schedule, whatever the answers) with 2 s
deadlines. Prints the refusals' and the answers' p50/p99/max, and how many admitted requests
missed their deadline; `--json PATH` writes the figures.

    HF_HUB_OFFLINE=1 python benchmarks/overload.py [--bundle URI] [--factor 10] [--seconds 4]
        [--rate REQ_PER_S] [--records 8] [--deadline-s 2] [--repeats 3] [--up-arg=--max-in-flight=64 ...]

Without --bundle it logs the bundled all-MiniLM-L6-v2 to the current MLflow store and exports it.
Everything (the load generator included) shares the machine: on a busy machine the figures are
noisy; compare runs made back to back.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import grpc
import numpy as np

TEXTS = [f"sentence {i} about the beaches of Florida and the rivers of Georgia" for i in range(64)]
PARAMS = {"pooling": "mean"}
REPLICAS = ["--replicas", "preprocess=2", "--replicas", "model=2", "--replicas", "postprocess=2"]


def start_up(bundle: str, extra: list[str]) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "splitserve", "up", bundle, *REPLICAS, *extra],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise SystemExit("splitserve up exited before printing its addresses")
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return proc, json.loads(line)


def requests(records: int) -> list[Any]:
    """The requests, built before the load starts (the generator's own CPU stays off the clock)."""
    from protos import splitserve_pb2 as pb
    from splitserve.core import codec
    from splitserve.core.records import to_records

    out = []
    for i in range(len(TEXTS)):
        rows = [{"id": str(k), "text": TEXTS[(i + k) % len(TEXTS)]} for k in range(records)]
        out.append(
            pb.PredictRequest(records=codec.records_to_pb(to_records(rows)), params=codec.params_to_struct(PARAMS))
        )
    return out


def capacity(gateway: str, records: int, seconds: float = 3.0, clients: int = 4) -> float:
    """Requests per second the stack serves, closed loop."""
    from splitserve.client import Client

    stop = time.monotonic() + seconds

    def loop(c: int) -> int:
        done = 0
        with Client(gateway, timeout_s=30) as client:
            while time.monotonic() < stop:
                client.predict([TEXTS[(c + k) % len(TEXTS)] for k in range(records)], params=PARAMS)
                done += 1
        return done

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        return sum(pool.map(loop, range(clients))) / seconds


def overload(gateway: str, rate: float, seconds: float, deadline_s: float, messages: list[Any]) -> dict[str, Any]:
    """Offer `rate` requests per second for `seconds`, open loop; each outcome's code and latency."""
    from protos import splitserve_pb2_grpc as pb_grpc

    outcomes: list[tuple[str, float]] = []
    lock = threading.Lock()
    with grpc.insecure_channel(gateway) as channel:
        predict = pb_grpc.GatewayStub(channel).Predict
        calls = []
        n = int(rate * seconds)
        start = time.perf_counter()
        for i in range(n):
            time.sleep(max(0.0, start + i / rate - time.perf_counter()))
            sent = time.perf_counter()
            call = predict.future(messages[i % len(messages)], timeout=deadline_s)

            def done(f: grpc.Future, sent: float = sent) -> None:
                elapsed = time.perf_counter() - sent
                error = f.exception()
                code = "OK" if error is None else f.code().name
                if code == "RESOURCE_EXHAUSTED":  # which tier refused: the message's first words name it
                    code += " by " + ("gateway" if f.details().startswith("gateway") else f.details()[:10])
                with lock:
                    outcomes.append((code, elapsed))

            call.add_done_callback(done)
            calls.append(call)
        offered_s = time.perf_counter() - start
        for call in calls:
            try:
                call.result(timeout=deadline_s + 10)
            except grpc.RpcError:
                pass
        time.sleep(0.2)
    by: dict[str, list[float]] = {}
    for code, s in outcomes:
        by.setdefault(code, []).append(s)
    return {"sent": n, "offered_per_s": n / offered_s, "by_code": by}


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    p50, p99 = np.percentile(values, [50, 99])
    return {"n": len(values), "p50_ms": p50 * 1000, "p99_ms": p99 * 1000, "max_ms": max(values) * 1000}


def line(run: dict[str, Any], args: argparse.Namespace) -> str:
    def ms(f: dict[str, float]) -> str:
        return f"{f['n']} (p50 {f.get('p50_ms', 0):.1f} ms, p99 {f.get('p99_ms', 0):.1f} ms, max {f.get('max_ms', 0):.0f} ms)"

    by = ", ".join(f"{where} {ms(f)}" for where, f in run["refused_by"].items())
    return (
        f"capacity {run['capacity_per_s']:.0f} req/s x {args.records} records; offered {run['offered_per_s']:.0f} req/s "
        f"for {args.seconds:.0f}s: refused {ms(run['refused'])} [{by}]; answered {ms(run['answered'])}; "
        f"late {run['late']}; others {run['others']}"
    )


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", help="Serving bundle URI (default: export the bundled MiniLM).")
    p.add_argument("--factor", type=float, default=10.0, help="Offered load, in multiples of capacity.")
    p.add_argument("--rate", type=float, help="Offer this many requests per second instead (stacks compared alike).")
    p.add_argument("--seconds", type=float, default=4.0, help="How long the overload lasts.")
    p.add_argument("--records", type=int, default=8, help="Records per request.")
    p.add_argument("--deadline-s", type=float, default=2.0)
    p.add_argument("--repeats", type=int, default=3, help="Overload runs, back to back, on one stack.")
    p.add_argument("--up-arg", action="append", default=[], help="More `splitserve up` arguments.")
    p.add_argument("--json", help="Write the figures here too.")
    args = p.parse_args(argv)

    from splitserve.bench.run import bundle_or_minilm

    bundle = bundle_or_minilm(args.bundle)
    proc, addresses = start_up(bundle, args.up_arg)
    runs = []
    try:
        gateway = addresses["gateway"]
        messages = requests(args.records)
        served = capacity(gateway, args.records)
        for _ in range(args.repeats):
            gc.collect()
            gc.disable()  # a full pass of this generator's own would count as the stack's latency
            started_at = time.time()
            try:
                run = overload(gateway, args.rate or args.factor * served, args.seconds, args.deadline_s, messages)
            finally:
                gc.enable()
            run.update(started_at=started_at, ended_at=time.time())
            by = run.pop("by_code")
            refusals = {code: v for code, v in by.items() if code.startswith("RESOURCE_EXHAUSTED")}
            run.update(
                capacity_per_s=served,
                refused=summary([s for v in refusals.values() for s in v]),
                refused_by={code.split(" by ")[1]: summary(v) for code, v in refusals.items()},
                answered=summary(by.get("OK", [])),
                late=len(by.get("DEADLINE_EXCEEDED", [])),
                others={
                    code: len(v)
                    for code, v in by.items()
                    if code not in refusals and code not in ("OK", "DEADLINE_EXCEEDED")
                },
            )
            runs.append(run)
            print(line(run, args), flush=True)
            time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"argv": argv, "cpus": os.cpu_count(), "runs": runs}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
