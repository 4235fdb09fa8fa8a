"""Replica pools: one gRPC channel per tier, balancing over its replicas.

gRPC's own client-side machinery does the work: `round_robin` over every replica address,
client-side health checking (a replica whose `grpc.health.v1` status is not SERVING gets no
calls) and a retry policy that sends a call that failed with UNAVAILABLE (a replica that died
or is draining) or that a stopping replica CANCELLED to another replica. Every splitserve RPC is idempotent, so retries are safe.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import grpc

from splitserve.core.grpc_server import is_unix


def target_for(addresses: list[str]) -> str:
    """One channel target for a list of replicas.

    IP literals become an `ipv4:`/`ipv6:` address list, `unix:PATH` sockets a `unix:` list; a single `dns:///name:port` (or any
    other target with a scheme, e.g. a Kubernetes headless Service) is used as is, and gRPC
    balances over every address it resolves to.
    """
    if not addresses:
        raise ValueError("a tier needs at least one replica address")
    if len(addresses) == 1 and ("://" in addresses[0] or addresses[0].startswith(("ipv4:", "ipv6:", "unix:"))):
        return addresses[0]
    unix = [a for a in addresses if is_unix(a)]
    if unix:  # Unix-domain sockets (replicas on this host): gRPC's unix: target takes a list of paths
        if len(unix) < len(addresses):
            raise ValueError("replica addresses mix unix: sockets and TCP addresses; give one kind per tier")
        return "unix:" + ",".join(a.removeprefix("unix:") for a in unix)
    hosts = []
    for address in addresses:
        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"replica address {address!r} is not host:port")
        host = host.strip("[]")
        if host == "localhost":
            host = "127.0.0.1"
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            if len(addresses) == 1:
                return f"dns:///{address}"
            raise ValueError(
                f"replica address {address!r}: list several replicas by IP, or give one dns:/// target"
            ) from None
        hosts.append((ip.version, f"[{host}]:{port}" if ip.version == 6 else f"{host}:{port}"))
    versions = {v for v, _ in hosts}
    if len(versions) > 1:
        raise ValueError("replica addresses mix IPv4 and IPv6")
    return f"ipv{versions.pop()}:" + ",".join(h for _, h in hosts)


def service_config(max_attempts: int) -> str:
    return json.dumps(
        {
            "loadBalancingConfig": [{"round_robin": {}}],
            "healthCheckConfig": {"serviceName": ""},
            "methodConfig": [
                {
                    "name": [{}],
                    "retryPolicy": {
                        "maxAttempts": max(2, max_attempts),
                        "initialBackoff": "0.02s",
                        "maxBackoff": "0.5s",
                        "backoffMultiplier": 2,
                        # CANCELLED: a replica shutting down cancels calls that reached it as it
                        # stopped (seen under SIGTERM); every tier call is idempotent, so it is retried.
                        # (A call the gateway's own caller cancelled is cancelled here, never retried.)
                        "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"],
                    },
                }
            ],
        }
    )


def connection_options(
    dns_refresh_s: float, keepalive_s: float, keepalive_timeout_s: float
) -> list[tuple[str, object]]:
    """How a channel notices new and dead replicas. A `dns:///` target is re-resolved whenever a
    connection closes (the servers close theirs after `max_connection_age_s`, so a scale-out is seen
    within about that long), at most every `dns_refresh_s`. Keepalive pings every `keepalive_s` find
    a replica whose host went away without closing its connections (calls on it fail UNAVAILABLE
    after `keepalive_timeout_s` more, and are retried elsewhere)."""
    options: list[tuple[str, object]] = [("grpc.dns_min_time_between_resolutions_ms", int(dns_refresh_s * 1000))]
    if keepalive_s > 0:
        options += [
            ("grpc.keepalive_time_ms", int(keepalive_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(keepalive_timeout_s * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
        ]
    return options


def open_channel(
    addresses: list[str],
    max_attempts: int,
    max_message_bytes: int,
    credentials: grpc.ChannelCredentials | None = None,
    server_name: str | None = None,
    extra_options: list[tuple[str, object]] | None = None,
) -> grpc.aio.Channel:
    """One channel over a tier's replicas; TLS with `credentials` (`server_name`: the name the
    replicas' certificates carry, when it is not the address's host)."""
    options: list[tuple[str, object]] = [
        *(extra_options or []),
        ("grpc.service_config", service_config(max_attempts)),
        ("grpc.enable_retries", 1),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.per_rpc_retry_buffer_size", max_message_bytes),
        ("grpc.retry_buffer_size", 4 * max_message_bytes),
    ]
    if credentials is None:
        return grpc.aio.insecure_channel(target_for(addresses), options=options)
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return grpc.aio.secure_channel(target_for(addresses), credentials, options=options)


def channel_credentials(ca: str | None, cert: str | None, key: str | None) -> grpc.ChannelCredentials | None:
    """TLS credentials for calling the tiers (None: plaintext); with cert and key, mutual TLS."""
    if ca is None:
        if cert or key:
            raise ValueError("--tier-tls-cert/--tier-tls-key need --tier-tls-ca")
        return None
    if (cert is None) != (key is None):
        raise ValueError("mutual TLS needs both --tier-tls-cert and --tier-tls-key")
    return grpc.ssl_channel_credentials(
        root_certificates=Path(ca).read_bytes(),
        private_key=Path(key).read_bytes() if key else None,
        certificate_chain=Path(cert).read_bytes() if cert else None,
    )
