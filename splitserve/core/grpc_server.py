"""Starting a splitserve gRPC server: health, reflection, TLS, the REST door where a tier has one,
the start-up announcement and graceful shutdown. Errors and metrics: `splitserve.core.interceptor`.

A tier supplies a `Tier` (its servicer registration, its service names and an async `load`);
`serve(tier, settings)` does the rest.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from splitserve.core import errors, heap, tracing
from splitserve.core.interceptor import ErrorInterceptor, install_log_filter
from splitserve.core.settings import ServerSettings

log = logging.getLogger("splitserve")


class Tier(Protocol):
    name: str
    service_names: list[str]  # full gRPC service names, for health and reflection

    def register(self, server: grpc.aio.Server) -> None: ...

    async def load(self) -> dict[str, Any]:
        """Load what the tier serves; returns facts for the ready line (e.g. fingerprint)."""
        ...


UNIX_SCHEME = "unix:"  # a Unix-domain socket's address: unix:PATH (tiers on one host, `splitserve up`'s default)


def is_unix(address: str) -> bool:
    """Whether `address` (a --host, a replica address, a client target) names a Unix-domain socket."""
    return address.startswith(UNIX_SCHEME)


def listen_address(settings: ServerSettings, port: int | None = None) -> str:
    """Where the server listens: `unix:PATH`, or host:port (`port`: the one bound, default the setting's)."""
    if is_unix(settings.host):
        return settings.host
    return f"{settings.host}:{settings.port if port is None else port}"


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
    install_log_filter()
    server = grpc.aio.server(interceptors=[ErrorInterceptor(tier.name)], options=server_options(settings))
    tier.register(server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = [*tier.service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
    reflection.enable_server_reflection([*names, reflection.SERVICE_NAME], server)
    address = listen_address(settings)
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
    address = listen_address(settings, running.port)  # a Unix socket's path is removed when the server stops
    log.info("%s listening on %s, loading", tier.name, address)

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
            heap.settle()
            await running.set_serving(True)
            facts = load.result() or {}
            if running.rest is not None:
                facts["rest"] = f"{settings.host}:{running.rest.port}"
            print(json.dumps({"tier": tier.name, "address": address, **facts}), flush=True)
            log.info("%s ready on %s", tier.name, address)
    await stopper
    load.cancel()
    log.info("%s draining (grace %.1fs)", tier.name, settings.grace_s)
    await running.stop(settings.grace_s)
    close = getattr(tier, "close", None)
    if close is not None:
        await close()
    tracing.shutdown()
    return code
