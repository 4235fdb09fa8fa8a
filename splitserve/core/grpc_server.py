"""What every splitserve gRPC server shares: error mapping, health, reflection, metrics,
start-up announcement and graceful shutdown.

A tier supplies a `Tier` (its servicer registration, its service names and an async `load`);
`serve(tier, settings)` does the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from prometheus_client import Counter, Gauge, Histogram

from splitserve.core import errors, tracing
from splitserve.core.settings import ServerSettings

log = logging.getLogger("splitserve")

# The one table from error classes to status codes: gRPC, and HTTP for the REST doors
# (`http_status`: one HTTP status per gRPC code).
STATUS_CODES: dict[type[errors.SplitServeError], tuple[grpc.StatusCode, int]] = {
    errors.InvalidInput: (grpc.StatusCode.INVALID_ARGUMENT, 400),
    errors.ModelNotFound: (grpc.StatusCode.NOT_FOUND, 404),
    errors.ModelNotReady: (grpc.StatusCode.UNAVAILABLE, 503),
    errors.Overloaded: (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    errors.DeadlineExceeded: (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
    errors.Unauthenticated: (grpc.StatusCode.UNAUTHENTICATED, 401),
    errors.BundleMismatch: (grpc.StatusCode.FAILED_PRECONDITION, 409),
    errors.BundleError: (grpc.StatusCode.FAILED_PRECONDITION, 409),
    errors.ExportError: (grpc.StatusCode.FAILED_PRECONDITION, 409),
    errors.TemplateError: (grpc.StatusCode.INTERNAL, 500),
}
# gRPC codes no error class has (a downstream hop's transport failures), for `http_status`.
_TRANSPORT_HTTP = {grpc.StatusCode.OK: 200, grpc.StatusCode.DEADLINE_EXCEEDED: 504, grpc.StatusCode.CANCELLED: 499}

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


# The longest status message sent: gRPC carries it in a header, and headers past ~8 KiB break
# the call (RESOURCE_EXHAUSTED "received metadata size exceeds ...") instead of reporting the error.
MAX_DETAILS_CHARS = 1024


def _cut(message: str) -> str:
    return message if len(message) <= MAX_DETAILS_CHARS else message[: MAX_DETAILS_CHARS - 1] + "…"


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status a client sees for an exception raised by a handler (its message cut short)."""
    if isinstance(exc, grpc.aio.AioRpcError):  # a downstream tier's answer, passed through
        return exc.code(), _cut(exc.details() or exc.code().name)
    for cls in type(exc).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls][0], _cut(str(exc))
    if isinstance(exc, errors.SplitServeError):
        return grpc.StatusCode.INTERNAL, _cut(str(exc))
    incident = uuid.uuid4().hex[:12]
    log.error("unexpected error (incident %s)", incident, exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error (incident {incident}); see the server log"


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status the REST doors answer for a gRPC status code (the table's HTTP column)."""
    for grpc_code, http in STATUS_CODES.values():
        if grpc_code == code:
            return http
    return _TRANSPORT_HTTP.get(code, 500)


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Maps exceptions to status codes and records per-method metrics, for unary RPCs and for
    server-streaming and bidirectional ones (an error ends the stream with its status). Calls whose
    deadline passed are normal under load: logged at INFO, at most once per EXPIRY_LOG_S, no traceback."""

    def __init__(self, tier: str):
        self.tier = tier
        self._expiries = _Tally()

    def _expired(self, method: str, code: grpc.StatusCode) -> None:
        self._expiries.add(f"{self.tier} {method} ended {code.name} before its answer")

    async def intercept_service(self, continuation: Callable[..., Awaitable[Any]], details: Any) -> Any:
        handler = await continuation(details)
        if handler is None:
            return handler
        method = details.method.rsplit("/", 1)[-1]
        # A span per RPC of the tier's own services (not health checks or reflection), when tracing is on.
        traced = details.method.lstrip("/") if tracing.enabled() and not details.method.startswith("/grpc.") else None
        codecs = {
            "request_deserializer": _tolerant(handler.request_deserializer),
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            unary = handler.unary_unary

            async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
                async with self._guard(method, context, traced):
                    response = await unary(_parsed(request, details.method), context)
                    if _call_over(context):  # answered after the deadline: sending would fail (and log ERROR)
                        raise errors.DeadlineExceeded("the call ended before its answer")
                    return response
                raise AssertionError("unreachable")  # the guard re-raises or aborts

            return grpc.unary_unary_rpc_method_handler(wrapped, **codecs)
        stream = handler.unary_stream or handler.stream_stream
        if not inspect.isasyncgenfunction(stream):  # e.g. health's Watch, which writes to its context
            return handler

        async def streamed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with self._guard(method, context, traced):
                if handler.unary_stream is not None:
                    request = _parsed(request, details.method)
                else:
                    request = _parsed_stream(request, details.method)
                async for item in stream(request, context):
                    yield item

        factory = (
            grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
        )
        return factory(streamed, **codecs)

    @contextlib.asynccontextmanager
    async def _guard(self, method: str, context: grpc.aio.ServicerContext, traced: str | None = None) -> Any:
        start = time.perf_counter()
        IN_FLIGHT.labels(self.tier).inc()
        code = grpc.StatusCode.OK
        scope = tracing.server_span(traced, context.invocation_metadata(), self.tier) if traced else _NO_SPAN
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
                    self._expired(method, code)
                if _call_over(context):  # the call is over (its deadline passed): nobody to tell, nothing to log
                    raise asyncio.CancelledError from None
                await context.abort(code, message)
            finally:
                tracing.end_rpc(span, code)
                IN_FLIGHT.labels(self.tier).dec()
                REQUESTS.labels(self.tier, method, code.name).inc()
                LATENCY.labels(self.tier, method).observe(time.perf_counter() - start)


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


logging.getLogger("grpc._cython.cygrpc").addFilter(_EndedSendFilter())


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


class Tier(Protocol):
    name: str
    service_names: list[str]  # full gRPC service names, for health and reflection

    def register(self, server: grpc.aio.Server) -> None: ...

    async def load(self) -> dict[str, Any]:
        """Load what the tier serves; returns facts for the ready line (e.g. fingerprint)."""
        ...


# Clients may send keepalive pings this often (the gateway pings its tiers to notice a dead host).
MIN_PING_INTERVAL_MS = 500


def server_options(settings: ServerSettings) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_PING_INTERVAL_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        # gRPC core's own default (1000, then cancelling calls at random) cancelled bursts instead of
        # letting the server refuse them: RESOURCE_EXHAUSTED, at once, by the tiers' admission.
        ("grpc.server.max_pending_requests", settings.max_pending_rpcs),
        ("grpc.server.max_pending_requests_hard_limit", settings.max_pending_rpcs),
    ]
    if settings.max_connection_age_s > 0:  # rebalancing: clients re-resolve when their connection ages out
        options += [
            ("grpc.max_connection_age_ms", int(settings.max_connection_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", int(settings.max_connection_age_grace_s * 1000)),
        ]
    return options


@dataclass
class Running:
    """A started server: its bound port and health servicer."""

    tier: Tier
    server: grpc.aio.Server
    health: health_aio.HealthServicer
    port: int
    rest: Any = None  # the REST door (`http_server.RestServer`), where the tier has one and it is on

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ["", *self.tier.service_names]:
            await self.health.set(name, status)

    async def stop(self, grace_s: float) -> None:
        await self.set_serving(False)
        if self.rest is not None:
            await asyncio.gather(self.rest.stop(), self.server.stop(grace_s))
        else:
            await self.server.stop(grace_s)


def server_credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    """TLS when the settings name a certificate; mutual TLS when they also name a client CA."""
    if settings.tls_cert is None and settings.tls_key is None:
        if settings.tls_client_ca is not None:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if settings.tls_cert is None or settings.tls_key is None:
        raise ValueError("TLS needs both --tls-cert and --tls-key")
    client_ca = Path(settings.tls_client_ca).read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(Path(settings.tls_key).read_bytes(), Path(settings.tls_cert).read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


async def start(tier: Tier, settings: ServerSettings) -> Running:
    """Start the tier's server (health NOT_SERVING, reflection on); loading is up to the caller."""
    server = grpc.aio.server(interceptors=[ErrorInterceptor(tier.name)], options=server_options(settings))
    tier.register(server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = [*tier.service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
    reflection.enable_server_reflection([*names, reflection.SERVICE_NAME], server)
    address = f"{settings.host}:{settings.port}"
    credentials = server_credentials(settings)
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    running = Running(tier, server, health, port)
    await running.set_serving(False)
    await server.start()
    rest_port = getattr(settings, "rest_port", None)
    if rest_port is not None and hasattr(tier, "rest_app"):
        from splitserve.core.http_server import RestServer

        running.rest = RestServer(tier.rest_app(), settings, rest_port)
        await running.rest.start()
    return running


async def serve(tier: Tier, settings: ServerSettings) -> int:
    """Run the tier until SIGINT/SIGTERM; returns a process exit code.

    Health is NOT_SERVING until `load` finishes, then SERVING; on a signal it flips back to
    NOT_SERVING and in-flight RPCs get `grace_s` seconds to finish. Once loaded, one JSON line
    `{"tier", "address", ...}` goes to stdout so launchers know where the tier listens.
    """
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if tracing.configure(f"splitserve-{tier.name}"):
        log.info("%s: OpenTelemetry tracing on (OTEL_* environment)", tier.name)
    if settings.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr=settings.host)
    running = await start(tier, settings)
    port = running.port
    log.info("%s listening on %s:%d, loading", tier.name, settings.host, port)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    load = asyncio.create_task(tier.load())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({load, stopper}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if load.done():
        if (failure := load.exception()) is not None:
            if not isinstance(failure, errors.SplitServeError):  # a known condition needs no traceback
                log.error("%s failed to load: %s", tier.name, failure, exc_info=failure)
            print(f"error: {tier.name} failed to load: {failure}", file=sys.stderr, flush=True)
            stop.set()
            code = 1
        else:
            await running.set_serving(True)
            facts = load.result() or {}
            if running.rest is not None:
                facts["rest"] = f"{settings.host}:{running.rest.port}"
            print(json.dumps({"tier": tier.name, "address": f"{settings.host}:{port}", **facts}), flush=True)
            log.info("%s ready on %s:%d", tier.name, settings.host, port)
    await stopper
    load.cancel()
    log.info("%s draining (grace %.1fs)", tier.name, settings.grace_s)
    await running.stop(settings.grace_s)
    close = getattr(tier, "close", None)
    if close is not None:
        await close()
    tracing.shutdown()
    return code
