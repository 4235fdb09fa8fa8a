"""Calls whose deadline passes about when their answer is ready are normal under load: no ERROR
and no traceback in the tier's log, whether the handler answered or failed (issue 11, defect 13;
CI once logged grpc.aio's "ExecuteBatchError raised in core by servicer method" here)."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import grpc
import pytest

from splitserve.core import errors
from splitserve.core.grpc_server import start
from splitserve.core.settings import ServerSettings

DEADLINE_S = 0.004


class Sleeper:
    """A tier whose one method answers (or fails) after a random time around the caller's deadline."""

    name = "sleeper"
    service_names = ["test.Sleeper"]

    def register(self, server: grpc.aio.Server) -> None:
        async def answer(request: bytes, context: Any) -> bytes:
            await asyncio.sleep(random.uniform(0, 2 * DEADLINE_S))
            if request == b"fail":
                raise errors.InvalidInput("refused after the work")
            return b"ok"

        handler = grpc.unary_unary_rpc_method_handler(answer)
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Sleeper", {"Answer": handler})])

    async def load(self) -> dict[str, Any]:
        return {}


async def test_answers_at_the_deadline_are_not_logged_as_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    running = await start(Sleeper(), ServerSettings(host="127.0.0.1", port=0))
    codes: dict[str, int] = {}
    try:
        await running.set_serving(True)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            call = channel.unary_unary("/test.Sleeper/Answer")

            async def one(body: bytes) -> None:
                try:
                    await call(body, timeout=DEADLINE_S)
                    code = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as exc:
                    code = exc.code()
                codes[code.name] = codes.get(code.name, 0) + 1

            for _ in range(40):
                await asyncio.gather(*(one(b"fail" if i % 2 else b"go") for i in range(10)))
            await asyncio.sleep(0.1)  # the last calls' ends reach the server
    finally:
        await running.stop(0.1)
    assert codes.get("DEADLINE_EXCEEDED", 0) > 0, codes  # the test did reach deadlines
    ours = [r for r in caplog.records if r.name.startswith(("splitserve", "grpc"))]
    loud = [r for r in ours if r.levelno >= logging.WARNING or r.exc_info]
    assert not loud, [r.getMessage()[:200] for r in loud]
