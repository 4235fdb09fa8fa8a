"""A real tier's call against the bare floor of the same server: `splitserve serve-preprocess` on a
bundle over a Unix-domain socket, called with one short record per Preprocess call and, in
alternating rounds of 20, its own gRPC health Check (the same process, interceptor and event
loop: what a call costs with no work in it). p50 round trip and the server's CPU per call, with
`--between` as in grpc_stream_floor.py (nothing; the client idle; or matrix products on every
core between calls, as the model tier's inference runs between a CPU tier's calls under `up`).
What the tier's own code costs per single-record request is the gap between the two rows (issue 25).

    HF_HUB_OFFLINE=1 python benchmarks/tier_floor.py [--bundle URI] [--calls 600]
        [--between nothing idle busy] [--gap-ms 7]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import statistics
import subprocess
import sys
import tempfile
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_stream_floor import add_between_args, condition_label, timed

from protos import splitserve_pb2 as pb
from protos import splitserve_pb2_grpc as pb_grpc


async def serving(channel: grpc.aio.Channel, proc: subprocess.Popen[bytes], log: str, timeout_s: float = 180.0) -> None:
    """Wait until the tier's health service answers SERVING (it has loaded its bundle)."""
    stub, deadline = health_pb2_grpc.HealthStub(channel), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the preprocess tier exited ({proc.returncode}); its log: {log}")
        with contextlib.suppress(grpc.aio.AioRpcError):
            answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
            if answer.status == health_pb2.HealthCheckResponse.SERVING:
                return
        await asyncio.sleep(0.2)
    raise SystemExit("the preprocess tier was not serving within 180 s")


async def measure(
    address: str, proc: subprocess.Popen[bytes], log: str, calls: int, conditions: list[str], gap_s: float
) -> None:
    channel = grpc.aio.insecure_channel(address)
    await serving(channel, proc, log)
    pid = proc.pid
    text = "The quick brown fox jumps over the lazy dog near the river bank."
    kinds = {
        "health Check": (health_pb2_grpc.HealthStub(channel).Check, health_pb2.HealthCheckRequest()),
        "Preprocess, 1 record": (
            pb_grpc.PreprocessStub(channel).Preprocess,
            pb.PreprocessRequest(records=[pb.Record(text=text)]),
        ),
    }
    for method, request in kinds.values():  # warm-up
        for _ in range(200):
            await method(request, timeout=5)
    print("| between calls | call | p50 ms | server CPU ms |\n|---|---|---:|---:|")
    for condition in conditions:
        latencies: dict[str, list[float]] = {k: [] for k in kinds}
        server = dict.fromkeys(kinds, 0.0)
        for _ in range(calls // 20):
            for kind, (method, request) in kinds.items():
                took, cpu, _ = await timed(functools.partial(method, request, timeout=5), 20, condition, gap_s, pid)
                latencies[kind] += took
                server[kind] += cpu
        what = condition_label(condition, gap_s)
        for kind in kinds:
            p50 = statistics.median(latencies[kind]) * 1e3
            print(f"| {what} | {kind} | {p50:.3f} | {server[kind] * 1e3 / len(latencies[kind]):.3f} |", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", help="a feature-extraction bundle URI (default: export the bundled MiniLM)")
    parser.add_argument("--calls", type=int, default=600)
    add_between_args(parser, ["nothing", "busy"])
    args = parser.parse_args()
    from splitserve.bench.run import bundle_or_minilm

    bundle = bundle_or_minilm(args.bundle)
    folder = tempfile.mkdtemp(prefix="tier-floor-")
    address, log = f"unix:{folder}/preprocess.sock", f"{folder}/preprocess.log"
    command = [sys.executable, "-m", "splitserve", "serve-preprocess", bundle, "--host", address]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        asyncio.run(measure(address, proc, log, args.calls, args.between, args.gap_ms / 1e3))
    finally:
        proc.terminate()
        proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
