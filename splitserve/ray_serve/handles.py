"""The transport between the Ray Serve deployments: a tier deployment's Serve handle, called like
the tier's gRPC stub, so the gateway's request path (`gateway_svc.orchestrator.Gateway`) runs over
Serve handles unchanged.

A tier replica answers a call with the tier's response message, or with a `Refusal` (the status
the tier's gRPC server would have sent: the one table, `splitserve.core.status`); the stub raises a
refusal as the `grpc.aio.AioRpcError` the gRPC stub would raise, so the request path's retries (a
replica without the pinned bundle version) and the doors' status mapping work as over gRPC. A call
whose replica died (kill -9, a host lost) is sent again, to another replica, within the hop's
deadline: every stage is a pure function of its request, so running it twice is harmless; a call
still without an answer at its deadline is UNAVAILABLE (retriable)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message

# How long to wait before sending a call again after its replica died (Serve notices the death
# and routes around it within about this).
RESEND_AFTER_S = 0.2


@dataclass(frozen=True)
class Refusal:
    """A tier's error status, as its gRPC server would have sent it."""

    code: str  # a grpc.StatusCode name
    details: str

    def error(self) -> grpc.aio.AioRpcError:
        return rpc_error(grpc.StatusCode[self.code], self.details)


@dataclass(frozen=True)
class Wire:
    """A protobuf message between deployments: its type's full name and its bytes, as on the gRPC wire
    (Ray's pickling cannot carry the upb message objects themselves)."""

    type_name: str
    data: bytes

    @classmethod
    def of(cls, message: Message) -> Wire:
        return cls(message.DESCRIPTOR.full_name, message.SerializeToString())

    def message(self) -> Any:
        """The message (its module, `protos.*_pb2`, imported by both ends)."""
        descriptor = descriptor_pool.Default().FindMessageTypeByName(self.type_name)
        return message_factory.GetMessageClass(descriptor).FromString(self.data)


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


def replica_lost(exc: BaseException) -> bool:
    """The replica that took the call died or could not be reached (not an answer of the tier)."""
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

    return isinstance(exc, ActorDiedError | ActorUnavailableError | RayActorError)


class HandleStub:
    """A tier deployment's handle (`splitserve.ray_serve.app.TierReplica.call`), called like the
    tier's gRPC stub: `await stub.Preprocess(request, timeout=..., metadata=...)`."""

    def __init__(self, handle: Any, tier: str):
        self.handle = handle
        self.tier = tier
        self.calls = handle.options(method_name="call")
        self.streams = handle.options(method_name="stream", stream=True)

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)

        async def call(request: Any, timeout: float | None = None, **_: Any) -> Any:  # metadata, wait_for_ready
            deadline = time.monotonic() + (timeout if timeout is not None else 30.0)
            while True:
                try:
                    answer = await self.calls.remote(method, Wire.of(request), deadline - time.monotonic())
                    break
                except Exception as exc:
                    if not replica_lost(exc):
                        raise
                    if time.monotonic() + RESEND_AFTER_S >= deadline:
                        raise self._unavailable(method, exc) from exc
                    await asyncio.sleep(RESEND_AFTER_S)
            if isinstance(answer, Refusal):
                raise answer.error()
            return answer.message()

        return call

    def ModelStreamInfer(self, requests: Any, timeout: float | None = None, **_: Any) -> Any:
        """The model tier's streamed answer (Triton's decoupled streaming), message by message; a
        replica lost mid-stream ends it UNAVAILABLE (the tokens already sent cannot be unsent)."""
        return _Stream(self, list(requests), timeout)

    def _unavailable(self, method: str, exc: BaseException) -> grpc.aio.AioRpcError:
        return rpc_error(
            grpc.StatusCode.UNAVAILABLE, f"{self.tier} {method}: no replica answered ({type(exc).__name__})"
        )


class _Stream:
    """An async iterator over a tier replica's streamed messages, cancellable like a gRPC call."""

    def __init__(self, stub: HandleStub, requests: list[Any], timeout: float | None):
        self.response = stub.streams.remote("ModelStreamInfer", [Wire.of(r) for r in requests], timeout)
        self.stub = stub

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[Any]:
        try:
            async for answer in self.response:
                if isinstance(answer, Refusal):
                    raise answer.error()
                yield answer.message()
        except Exception as exc:
            if replica_lost(exc):
                raise self.stub._unavailable("ModelStreamInfer", exc) from exc
            raise

    def cancel(self) -> None:
        self.response.cancel()
