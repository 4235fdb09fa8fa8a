"""Inline stages (`inline_stages`): the preprocess and postprocess tiers' servicers running in the
gateway's process, called like their gRPC stubs (the program that starts the gateway hands them in:
a tier never imports another)."""

from __future__ import annotations

import time
from typing import Any

from splitserve.core import tracing


class InlineStub:
    """A tier's servicer running in this process, called like its gRPC stub."""

    def __init__(self, servicer: Any):
        self.servicer = servicer

    def __getattr__(self, method: str) -> Any:
        handler = getattr(self.servicer, method)

        async def call(request: Any, timeout: float | None = None, **_: Any) -> Any:  # metadata: no hop to carry it
            with tracing.span(f"{self.servicer.name} {method} (inline)"):
                return await handler(request, InlineContext(timeout))

        return call


class InlineContext:
    """What an inline stage reads of its call's context: the time left (`timeout` of the hop)."""

    def __init__(self, timeout: float | None):
        self.deadline = None if timeout is None else time.monotonic() + timeout

    def time_remaining(self) -> float | None:
        return None if self.deadline is None else max(self.deadline - time.monotonic(), 0.0)
