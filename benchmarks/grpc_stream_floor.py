"""What a hop would cost as a message on a long-lived bidirectional stream instead of a unary call:
a grpc.aio echo server (bytes, no protobuf) over a Unix-domain socket, called 2,000 times each way
in two alternating rounds; CPU per message of the server process and of the client's event loop
thread. The gap is what a multiplexed stream between the gateway and its tiers could save per hop
(issue 25: what is left of the split's cost is grpc.aio's per-call machinery).

    python benchmarks/grpc_stream_floor.py [MESSAGES]
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator

import grpc
from grpc_floor import cpu_s


def same(data: bytes) -> bytes:
    return data


async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def echo_stream(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    async for message in requests:
        yield message


async def serve(address: str) -> None:
    server = grpc.aio.server()
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(echo, same, same),
        "Stream": grpc.stream_stream_rpc_method_handler(echo_stream, same, same),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("floor.Echo", handlers)])
    server.add_insecure_port(address)
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


async def measure(address: str, pid: int, n: int) -> None:
    channel = grpc.aio.insecure_channel(address)
    unary = channel.unary_unary("/floor.Echo/Unary", same, same)
    stream = channel.stream_stream("/floor.Echo/Stream", same, same)()
    message = b"x" * 300  # about a one-record preprocess request

    async def one(kind: str) -> None:
        if kind == "unary":
            await unary(message, timeout=5)
        else:
            await stream.write(message)
            await stream.read()

    for _ in range(200):  # warm-up
        await one("unary")
        await one("stream message")
    figures: dict[str, list[tuple[float, float, float]]] = {"unary": [], "stream message": []}
    for _ in range(2):
        for kind, rounds in figures.items():
            server, client, latencies = cpu_s(pid), time.thread_time(), []
            for _ in range(n):
                start = time.perf_counter()
                await one(kind)
                latencies.append(time.perf_counter() - start)
            rounds.append(
                (
                    statistics.median(latencies) * 1e3,
                    (cpu_s(pid) - server) * 1e3 / n,
                    (time.thread_time() - client) * 1e3 / n,
                )
            )
    for kind, rounds in figures.items():
        p50, server_ms, client_ms = (statistics.mean(r[i] for r in rounds) for i in range(3))
        print(f"{kind}: p50 {p50:.3f} ms, server CPU {server_ms:.3f} ms, client CPU {client_ms:.3f} ms per message")


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        asyncio.run(serve(argv[1]))
        return 0
    n = int(argv[0]) if argv else 2000
    address = f"unix:{tempfile.mkdtemp(prefix='grpc-stream-floor-')}/echo.sock"
    proc = subprocess.Popen([sys.executable, __file__, "serve", address], stdout=subprocess.PIPE, text=True)
    try:
        if proc.stdout is not None:
            proc.stdout.readline()
        asyncio.run(measure(address, proc.pid, n))
    finally:
        proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
