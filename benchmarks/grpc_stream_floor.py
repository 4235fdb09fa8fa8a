"""What a hop costs at the least, as a unary call and as a message on a long-lived bidirectional
stream: a grpc.aio echo server (bytes, no protobuf) over a Unix-domain socket, called MESSAGES
times each way in two alternating rounds; p50 round trip, CPU per message of the server process
and of the client's event loop thread. The gap between the two is what a multiplexed stream
between the gateway and its tiers could save per hop (issue 25).

`--between` says what happens between two calls, as a tier at 1 x 1 sees it: `nothing` (back to
back: the floor every other benchmark quotes), `idle` (the client sleeps `--gap-ms`: both
processes' threads go to sleep between calls, as a tier does while the others work) or `busy`
(`--gap-ms` of float32 matrix products on every core, as the model tier's inference runs between
a CPU tier's calls under `up`: the caches the next call finds are cold).

    python benchmarks/grpc_stream_floor.py [MESSAGES] [--between nothing idle busy] [--gap-ms 7]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import numpy as np
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


def add_between_args(parser: argparse.ArgumentParser, default: list[str]) -> None:
    """`--between` and `--gap-ms`, as this script and tier_floor.py take them."""
    parser.add_argument("--between", nargs="+", choices=("nothing", "idle", "busy"), default=default)
    parser.add_argument("--gap-ms", type=float, default=7.0)


def condition_label(condition: str, gap_s: float) -> str:
    return condition if condition == "nothing" else f"{condition} {gap_s * 1e3:g} ms"


def between(kind: str, gap_s: float) -> None:
    """What the client does between two calls (see the module's docstring)."""
    if kind == "idle":
        time.sleep(gap_s)
    elif kind == "busy":
        a = np.ones((600, 600), np.float32)
        end = time.perf_counter() + gap_s
        while time.perf_counter() < end:
            a @ a  # BLAS on every core


async def timed(
    call: Callable[[], Awaitable[object]], n: int, condition: str, gap_s: float, pid: int
) -> tuple[list[float], float, float]:
    """`n` awaits of `call()`, each after `between(condition, gap_s)`: their latencies (s), the server
    process's CPU-seconds over them (the gaps included: an idle server spends next to nothing in
    them) and the client's event-loop thread's CPU-seconds within the calls."""
    client, latencies = 0.0, []
    server = cpu_s(pid)
    for _ in range(n):
        between(condition, gap_s)
        c0, start = time.thread_time(), time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - start)
        client += time.thread_time() - c0
    return latencies, cpu_s(pid) - server, client


async def measure(address: str, pid: int, n: int, conditions: list[str], gap_s: float) -> None:
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
    print("| between calls | call | p50 ms | server CPU ms | client CPU ms |\n|---|---|---:|---:|---:|")
    for condition in conditions:
        figures: dict[str, list[tuple[float, float, float]]] = {"unary": [], "stream message": []}
        for _ in range(2):
            for kind, rounds in figures.items():
                latencies, server, client = await timed(functools.partial(one, kind), n, condition, gap_s, pid)
                rounds.append((statistics.median(latencies) * 1e3, server * 1e3 / n, client * 1e3 / n))
        what = condition_label(condition, gap_s)
        for kind, rounds in figures.items():
            p50, server_ms, client_ms = (statistics.mean(r[i] for r in rounds) for i in range(3))
            print(f"| {what} | {kind} | {p50:.3f} | {server_ms:.3f} | {client_ms:.3f} |", flush=True)


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        asyncio.run(serve(argv[1]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("messages", type=int, nargs="?", default=2000)
    add_between_args(parser, ["nothing"])
    args = parser.parse_args(argv)
    address = f"unix:{tempfile.mkdtemp(prefix='grpc-stream-floor-')}/echo.sock"
    proc = subprocess.Popen([sys.executable, __file__, "serve", address], stdout=subprocess.PIPE, text=True)
    try:
        if proc.stdout is not None:
            proc.stdout.readline()
        asyncio.run(measure(address, proc.pid, args.messages, args.between, args.gap_ms / 1e3))
    finally:
        proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
