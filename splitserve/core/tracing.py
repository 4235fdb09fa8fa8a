"""OpenTelemetry spans per hop, joined by the W3C `traceparent` the gateway forwards.

Off unless the standard environment asks for it: `OTEL_TRACES_EXPORTER` (`otlp`, `console`) or an
OTLP endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), and not
`OTEL_SDK_DISABLED=true`. The OTLP/gRPC exporter then reads the rest of `OTEL_EXPORTER_OTLP_*`, the
batch processor `OTEL_BSP_*`, the service name `OTEL_SERVICE_NAME` (default `splitserve-<tier>`).
Off costs nothing: OpenTelemetry is not even imported, and every helper here returns at once.

Each server RPC of a tier's own services is a SERVER span (`splitserve.v1.Gateway/Predict`, ...),
a child of the caller's `traceparent`; the gateway sends its own span as the parent of the hops it
makes, and the model tier adds `queue` and `inference` spans under `ModelInfer`. The provider is
this module's own (not the global one), so the host process's other tracing is left alone.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

TRACE_HEADERS = ("traceparent", "tracestate")

_tracer: Any = None  # an opentelemetry Tracer once configured; None: tracing is off
_provider: Any = None


def enabled() -> bool:
    return _tracer is not None


def wanted() -> bool:
    """Whether the OTEL_* environment asks for traces."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return any(os.environ.get(k) for k in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def configure(service_name: str, exporter: Any = None) -> bool:
    """Turn tracing on: with `exporter` (a SpanExporter; spans exported as they end), or as the
    environment says (see the module docstring). Returns whether tracing is on."""
    global _tracer, _provider
    if exporter is None and not wanted():
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    name = os.environ.get("OTEL_SERVICE_NAME") or service_name
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        provider.add_span_processor(BatchSpanProcessor(_exporter_from_env()))
    shutdown()
    _provider, _tracer = provider, provider.get_tracer("splitserve")
    return True


def _exporter_from_env() -> Any:
    kind = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if kind != "otlp":
        raise ValueError(f"OTEL_TRACES_EXPORTER={kind!r}: splitserve supports otlp, console and none")
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def shutdown() -> None:
    """Flush and stop (at server exit); tracing is off afterwards."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None


def _propagator() -> Any:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator()


@contextlib.contextmanager
def server_span(name: str, metadata: Any, tier: str) -> Iterator[Any]:
    """A SERVER span for one RPC, the child of the `traceparent` in its metadata; yields the span
    (None when tracing is off)."""
    if _tracer is None:
        yield None
        return
    from opentelemetry.trace import SpanKind

    carrier = {k: v for k, v in metadata or () if k in TRACE_HEADERS}
    parent = _propagator().extract(carrier) if carrier else None
    attributes = {"rpc.system": "grpc", "rpc.method": name, "splitserve.tier": tier}
    with _tracer.start_as_current_span(
        name, context=parent, kind=SpanKind.SERVER, attributes=attributes, record_exception=False
    ) as span:
        yield span


def end_rpc(span: Any, code: Any) -> None:
    """Record a server span's gRPC status (`code`: a grpc.StatusCode)."""
    if span is None:
        return
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code.name != "OK":
        span.set_status(Status(StatusCode.ERROR, code.name))


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[None]:
    """An INTERNAL child span of the current one (e.g. an inline stage); nothing when off."""
    if _tracer is None:
        yield
        return
    with _tracer.start_as_current_span(name, attributes=attributes):
        yield


def record_phases(phases: list[tuple[str, int]]) -> None:
    """Children of the current span for phases that just ended one after the other, given as
    (name, microseconds) in order (the model tier's queue, then inference)."""
    if _tracer is None:
        return
    start = time.time_ns() - sum(us for _, us in phases) * 1000
    for name, us in phases:
        end = start + us * 1000
        _tracer.start_span(name, start_time=start).end(end_time=end)
        start = end


def outgoing(metadata: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """Metadata for a downstream call: the current span becomes the callee's parent. Off, the
    caller's own trace headers travel on unchanged."""
    if _tracer is None:
        return metadata
    carrier: dict[str, str] = {}
    _propagator().inject(carrier)
    return (*((k, v) for k, v in metadata if k not in TRACE_HEADERS), *carrier.items())
