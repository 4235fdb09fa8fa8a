"""The server interceptor every tier runs: exceptions mapped to status codes (`status.status_of`),
per-method Prometheus metrics, a span per RPC, undecodable requests refused as INVALID_ARGUMENT,
and calls that ended early (deadline, caller gone) tallied instead of logged one by one."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from prometheus_client import Counter, Gauge, Histogram

from splitserve.core import errors, tracing
from splitserve.core.status import LOAD_REFUSAL, status_of

log = logging.getLogger("splitserve")

REQUESTS = Counter("splitserve_requests_total", "RPCs handled", ["tier", "method", "code"])
LATENCY = Histogram(
    "splitserve_request_seconds",
    "RPC latency",
    ["tier", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
IN_FLIGHT = Gauge("splitserve_in_flight", "RPCs in progress", ["tier"])
_NO_SPAN = contextlib.nullcontext()


EXPIRY_LOG_S = 10.0


class _Tally:
    """Counts calls that ended early, normal under load: one INFO line per EXPIRY_LOG_S at most."""

    def __init__(self) -> None:
        self.count, self.logged = 0, 0.0

    def add(self, what: str) -> None:
        """Count one call; `what` says what happened to the latest."""
        self.count += 1
        now = time.monotonic()
        if now - self.logged >= EXPIRY_LOG_S:
            log.info("%d calls ended early (last: %s)", self.count, what)
            self.count, self.logged = 0, now


class _Metrics:
    """One method's metric children, bound once (a `labels()` lookup per request costs a lock and a
    dict lookup per metric); its requests' counters by status code, bound at their first use."""

    def __init__(self, tier: str, method: str):
        self.tier, self.method = tier, method
        self.in_flight = IN_FLIGHT.labels(tier)
        self.latency = LATENCY.labels(tier, method)
        self.requests: dict[grpc.StatusCode, Any] = {}

    def ended(self, code: grpc.StatusCode, seconds: float) -> None:
        counter = self.requests.get(code)
        if counter is None:
            counter = self.requests[code] = REQUESTS.labels(self.tier, self.method, code.name)
        counter.inc()
        self.latency.observe(seconds)


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Maps exceptions to status codes and records per-method metrics, for unary RPCs and for
    server-streaming and bidirectional ones (an error ends the stream with its status). Calls whose
    deadline passed are normal under load: logged at INFO, at most once per EXPIRY_LOG_S, no traceback.
    Each method's wrapped handler is made once, at its first call (gRPC asks the interceptor on
    every call)."""

    def __init__(self, tier: str):
        self.tier = tier
        self._expiries = _Tally()
        self._handlers: dict[str, Any] = {}

    def _expired(self, method: str, code: grpc.StatusCode) -> None:
        self._expiries.add(f"{self.tier} {method} ended {code.name} before its answer")

    async def intercept_service(self, continuation: Callable[..., Awaitable[Any]], details: Any) -> Any:
        wrapped = self._handlers.get(details.method)
        if wrapped is None:
            handler = await continuation(details)
            if handler is None:
                return handler
            wrapped = self._handlers[details.method] = self._wrap(handler, details.method)
        return wrapped

    def _wrap(self, handler: Any, full_method: str) -> Any:
        method = full_method.rsplit("/", 1)[-1]
        metrics = _Metrics(self.tier, method)
        # A span per RPC of the tier's own services (not health checks or reflection), when tracing is on.
        span_name = None if full_method.startswith("/grpc.") else full_method.lstrip("/")
        codecs = {
            "request_deserializer": _tolerant(handler.request_deserializer),
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            unary = handler.unary_unary

            async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
                async with self._guard(metrics, context, span_name):
                    response = await unary(_parsed(request, full_method), context)
                    if _call_over(context):  # answered after the deadline: sending would fail (and log ERROR)
                        raise errors.DeadlineExceeded("the call ended before its answer")
                    return response
                raise AssertionError("unreachable")  # the guard re-raises or aborts

            return grpc.unary_unary_rpc_method_handler(wrapped, **codecs)
        stream = handler.unary_stream or handler.stream_stream
        if not inspect.isasyncgenfunction(stream):  # e.g. health's Watch, which writes to its context
            return handler

        async def streamed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with self._guard(metrics, context, span_name):
                if handler.unary_stream is not None:
                    request = _parsed(request, full_method)
                else:
                    request = _parsed_stream(request, full_method)
                async for item in stream(request, context):
                    yield item

        factory = (
            grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
        )
        return factory(streamed, **codecs)

    @contextlib.asynccontextmanager
    async def _guard(self, metrics: _Metrics, context: grpc.aio.ServicerContext, span_name: str | None) -> Any:
        start = time.perf_counter()
        metrics.in_flight.inc()
        code = grpc.StatusCode.OK
        if span_name is not None and tracing.enabled():
            scope: Any = tracing.server_span(span_name, context.invocation_metadata(), self.tier)
        else:
            scope = _NO_SPAN
        with scope as span:
            try:
                yield
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:  # noqa: BLE001 - this is the mapping point
                if context.code() not in (None, grpc.StatusCode.OK) and not isinstance(exc, errors.SplitServeError):
                    code = context.code()
                    raise  # the handler already aborted
                code, message = status_of(exc)
                if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
                    self._expired(metrics.method, code)
                if _call_over(context):  # the call is over (its deadline passed): nobody to tell, nothing to log
                    raise asyncio.CancelledError from None
                refusal = LOAD_REFUSAL if isinstance(exc, errors.Overloaded) and exc.load else ()
                await context.abort(code, message, trailing_metadata=refusal)
            finally:
                tracing.end_rpc(span, code)
                metrics.in_flight.dec()
                metrics.ended(code, time.perf_counter() - start)


def _call_over(context: grpc.aio.ServicerContext) -> bool:
    """Whether the call has ended: its status was sent, or its deadline has passed (grpc.aio's
    `done()` says only the former; core ends a call at its deadline without telling the handler)."""
    left = context.time_remaining()
    return context.done() or (left is not None and left <= 0)


class _EndedSendFilter(logging.Filter):
    """grpc.aio logs ERROR with a traceback ("ExecuteBatchError raised in core by servicer method")
    when a handler's answer or status is sent on a call that core has already ended (its deadline
    passed, its caller left or the connection went) before that end reached Python. `_call_over`
    before sending leaves a race of microseconds; such calls are tallied as expiries are."""

    PREFIX = "ExecuteBatchError raised in core by servicer method"

    def __init__(self) -> None:
        super().__init__()
        self.ended = _Tally()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(self.PREFIX):
            return True
        method = message[len(self.PREFIX) :].strip(" []")
        self.ended.add(f"{method} had ended before its answer was sent")
        return False


_ENDED_SEND_FILTER = _EndedSendFilter()


def install_log_filter() -> None:
    """Tally grpc.aio's ERROR lines for answers sent on calls already ended (once per process)."""
    logger = logging.getLogger("grpc._cython.cygrpc")
    if _ENDED_SEND_FILTER not in logger.filters:
        logger.addFilter(_ENDED_SEND_FILTER)


@dataclass
class _Undecodable:
    """Stands in for a request whose bytes do not parse, until the handler's guard refuses it
    (a deserializer that raises makes gRPC answer UNKNOWN with the parser's own message)."""

    error: Exception


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # noqa: BLE001 - refused as INVALID_ARGUMENT by the handler
            return _Undecodable(exc)

    return parse


def _parsed(request: Any, method: str) -> Any:
    if isinstance(request, _Undecodable):
        raise errors.InvalidInput(f"the request to {method} is not a valid protobuf message (corrupt or not UTF-8)")
    return request


async def _parsed_stream(requests: Any, method: str) -> Any:
    async for request in requests:
        yield _parsed(request, method)
