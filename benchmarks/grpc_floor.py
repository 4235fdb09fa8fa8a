"""The grpc.aio floor: CPU per unary call of a bare grpc.aio server (the health service's Check) and
a grpc.aio client in two processes, over loopback TCP and over a Unix-domain socket, and over a Unix
socket with the interceptor every tier runs (`splitserve.core.interceptor.ErrorInterceptor`: what
it adds to a call), the targets taking turns of 20 calls. What no splitserve code can go under, per
hop (issue 25).

    python benchmarks/grpc_floor.py [CALLS]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio


async def serve(address: str, intercepted: bool) -> None:
    interceptors = []
    if intercepted:
        from splitserve.core.interceptor import ErrorInterceptor

        interceptors.append(ErrorInterceptor("floor"))
    server = grpc.aio.server(interceptors=interceptors)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    port = server.add_insecure_port(address)
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


def cpu_s(pid: int) -> float:
    """Every thread's CPU-seconds, from the scheduler's nanosecond counters."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/schedstat") as f:
            total += int(f.read().split()[0])
    return total / 1e9


async def calls(targets: dict[str, tuple[str, int]], n: int) -> None:
    stubs = {k: (health_pb2_grpc.HealthStub(grpc.aio.insecure_channel(t)), pid) for k, (t, pid) in targets.items()}
    request = health_pb2.HealthCheckRequest()
    for stub, _ in stubs.values():
        for _ in range(200):  # warm-up
            await stub.Check(request, timeout=5)
    latencies: dict[str, list[float]] = {k: [] for k in stubs}
    client = dict.fromkeys(stubs, 0.0)
    server = {k: cpu_s(pid) for k, (_, pid) in stubs.items()}
    for _ in range(n // 20):
        for k, (stub, _) in stubs.items():
            t0 = time.thread_time()
            for _ in range(20):
                t = time.perf_counter()
                await stub.Check(request, timeout=5)
                latencies[k].append(time.perf_counter() - t)
            client[k] += time.thread_time() - t0
    for k, (_, pid) in stubs.items():
        print(
            f"{k}: p50 {1e3 * statistics.median(latencies[k]):.3f} ms, server CPU "
            f"{1e3 * (cpu_s(pid) - server[k]) / n:.3f} ms/call, client CPU {1e3 * client[k] / n:.3f} ms/call "
            "(the client's event loop thread only)"
        )


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        asyncio.run(serve(argv[1], argv[2:3] == ["intercepted"]))
        return 0
    n = int(argv[0]) if argv else 2000
    folder = tempfile.mkdtemp(prefix="grpc-floor-")
    servers, targets = [], {}
    try:
        for kind, address in (
            ("tcp", "127.0.0.1:0"),
            ("unix", f"unix:{folder}/floor.sock"),
            ("unix + ErrorInterceptor", f"unix:{folder}/intercepted.sock"),
        ):
            command = [sys.executable, __file__, "serve", address, *(["intercepted"] if "Interceptor" in kind else [])]
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
            servers.append(proc)
            port = proc.stdout.readline().strip() if proc.stdout else ""
            targets[kind] = (f"127.0.0.1:{port}" if kind == "tcp" else address, proc.pid)
        asyncio.run(calls(targets, n))
    finally:
        for proc in servers:
            proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
