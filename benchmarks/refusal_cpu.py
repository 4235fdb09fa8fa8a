"""CPU per refusal at the gateway's door, against gRPC's own concurrency limit (issue 25).

A gateway (`GatewayTier`, the real servicer and interceptor, no tiers behind it) that refuses every
Predict (`--max-in-flight 0`), or the same server with `grpc.aio.server(maximum_concurrent_rpcs=1)`
and that one call held by a health Watch (gRPC refuses before parsing, "Concurrent RPC limit
exceeded!"), in a subprocess; an asyncio client sends 8-record Predicts, 16 at a time, and the
server's CPU-seconds per call are read from /proc.

    python benchmarks/refusal_cpu.py [--calls 3000] [--repeats 2]

Measured 2026-12-07 on the shared 2-core machine (noisy), four runs each: gateway 450-640 us,
gRPC's limit 277-357 us per refusal (a plain grpc.aio unary call, answered, about 285-315 us).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time

import grpc
import psutil

TEXTS = [f"sentence {i} about the beaches of Florida and the rivers of Georgia" for i in range(8)]


def serve(variant: str) -> None:
    from gateway_svc.server import GatewayTier
    from gateway_svc.settings import GatewaySettings
    from protos import splitserve_pb2 as pb
    from splitserve.core import grpc_server

    nowhere = ["127.0.0.1:1"]  # never called: every request is refused before any hop
    settings = GatewaySettings(model=nowhere, preprocess=nowhere, postprocess=nowhere, max_in_flight=0)
    tier = GatewayTier(settings)
    tier.gateway.versions.info = pb.TierInfo(model="m")  # ready, as if its tiers had answered
    if variant == "grpc-limit":
        make = grpc.aio.server
        grpc.aio.server = lambda **kw: make(maximum_concurrent_rpcs=1, **kw)  # type: ignore[assignment]

    async def main() -> None:
        running = await grpc_server.start(tier, settings)
        await running.set_serving(True)
        print(running.port, flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


async def measure(variant: str, port: int, pid: int, calls: int) -> str:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from protos import splitserve_pb2 as pb
    from protos import splitserve_pb2_grpc as pb_grpc
    from splitserve.core import codec
    from splitserve.core.records import to_records

    rows = [{"id": str(i), "text": t} for i, t in enumerate(TEXTS)]
    request = pb.PredictRequest(
        records=codec.records_to_pb(to_records(rows)), params=codec.params_to_struct({"pooling": "mean"})
    )
    codes: dict[str, int] = {}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        if variant == "grpc-limit":  # hold the one call the server allows
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
            await watch.read()
        stub = pb_grpc.GatewayStub(channel)
        gate = asyncio.Semaphore(16)

        async def one() -> None:
            async with gate:
                try:
                    await stub.Predict(request, timeout=10)
                    code = "OK"
                except grpc.aio.AioRpcError as exc:
                    code = exc.code().name
                codes[code] = codes.get(code, 0) + 1

        await asyncio.gather(*(one() for _ in range(300)))  # warm up
        server = psutil.Process(pid)
        cpu, wall = sum(server.cpu_times()[:2]), time.perf_counter()
        await asyncio.gather(*(one() for _ in range(calls)))
        cpu, wall = sum(server.cpu_times()[:2]) - cpu, time.perf_counter() - wall
    return f"{variant}: {calls} calls in {wall:.2f}s, server CPU {1e6 * cpu / calls:.0f} us per call; {codes}"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=3000)
    p.add_argument("--repeats", type=int, default=2, help="Each variant this many times, in turn.")
    p.add_argument("--serve", choices=("gateway", "grpc-limit"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    for _ in range(args.repeats):
        for variant in ("gateway", "grpc-limit"):
            proc = subprocess.Popen([sys.executable, __file__, "--serve", variant], stdout=subprocess.PIPE, text=True)
            try:
                assert proc.stdout is not None
                port = int(proc.stdout.readline())
                print(asyncio.run(measure(variant, port, proc.pid, args.calls)), flush=True)
            finally:
                proc.kill()
                proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
