"""Settings shared by every server. Each tier subclasses `ServerSettings` in its own
`settings.py` with its env prefix; CLI flags are generated from the same fields
(`splitserve.cliargs.add_settings_flags`), so every knob has one home.

Precedence: CLI flag > `SPLITSERVE_<TIER>_<FIELD>` env var > default.
"""

from __future__ import annotations

import os
import re

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from splitserve.core.limits import MAX_MESSAGE_BYTES, MAX_REQUEST_CHARS, MAX_REQUEST_TOKENS
from splitserve.core.records import MAX_RECORDS, MAX_TEXT_CHARS


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SPLITSERVE_", extra="forbid")

    host: str = Field(
        "127.0.0.1",
        description="Address to bind: a host (with --port), or unix:PATH for a Unix-domain socket (tiers on one "
        "host; the socket file is replaced at start and removed at stop).",
    )
    port: int = Field(0, description="Port to bind; 0 picks a free one (announced on stdout).")
    grace_s: float = Field(10.0, description="Seconds in-flight RPCs get to finish on SIGTERM.")
    max_message_bytes: int = Field(
        MAX_MESSAGE_BYTES,
        description="Largest gRPC message accepted or sent; give every tier the same (requests whose later "
        "messages would exceed it are refused before the model runs).",
    )
    max_pending_rpcs: int = Field(
        10_000,
        ge=1,
        description="Calls gRPC core holds until the server picks them up; past it they are refused "
        "(RESOURCE_EXHAUSTED). Admission, counted in records and tokens, refuses long before.",
    )
    metrics_port: int | None = Field(None, description="Serve Prometheus metrics on this port (off when unset).")
    log_level: str = Field("info", description="Logging level.")
    tls_cert: str | None = Field(None, description="PEM certificate (chain) file: serve TLS instead of plaintext.")
    tls_key: str | None = Field(None, description="PEM private key file of --tls-cert.")
    tls_client_ca: str | None = Field(
        None, description="PEM CA file: require client certificates it signed (mutual TLS)."
    )
    max_connection_age_s: float = Field(
        60.0,
        ge=0,
        description="Close each client connection after this long (GOAWAY, with gRPC's jitter): clients reconnect and "
        "re-resolve, so they spread over replicas added since (0: never).",
    )
    max_connection_age_grace_s: float = Field(
        120.0, ge=0, description="Time in-flight RPCs on an aged connection get before it is closed."
    )

    @model_validator(mode="after")
    def _unix_socket(self) -> ServerSettings:
        if self.host.startswith("unix:"):
            path = self.host.removeprefix("unix:")
            if not path:
                raise ValueError("unix: needs a socket path, e.g. unix:/tmp/preprocess.sock")
            if len(os.fsencode(path)) > MAX_SOCKET_PATH:  # the kernel's sun_path (108 bytes with its NUL)
                raise ValueError(
                    f"{self.host}: a Unix-domain socket path is at most {MAX_SOCKET_PATH} bytes; this one is "
                    f"{len(os.fsencode(path))} (a shorter TMPDIR, or --tier-transport tcp for `splitserve up`)"
                )
            tcp_only = {"port": self.port or None, "metrics_port": self.metrics_port}
            tcp_only["rest_port"] = getattr(self, "rest_port", None)
            for name, value in tcp_only.items():
                if value is not None:
                    flag = "--" + name.replace("_", "-")
                    raise ValueError(f"{flag} needs a TCP --host: {self.host} is a Unix-domain socket")
        return self


class BundleServerSettings(ServerSettings):
    bundle_uri: str = Field(..., description="Serving bundle: a path, runs:/..., models:/name/3, models:/name@alias.")
    model_name: str | None = Field(None, description="Name the model is served under (default: the bundle's).")
    bundle: list[str] = Field(
        [],
        description="More bundles served beside BUNDLE_URI, as NAME=URI (requests choose one by its model name; "
        "BUNDLE_URI's serves requests that name none).",
    )
    max_records: int = Field(MAX_RECORDS, description="Most records one request may carry.")
    max_text_chars: int = Field(MAX_TEXT_CHARS, description="Longest text (in characters) one record may carry.")
    max_request_chars: int = Field(
        MAX_REQUEST_CHARS, ge=1, description="Most characters of text one request may carry (all its records)."
    )
    max_request_tokens: int = Field(
        MAX_REQUEST_TOKENS,
        ge=1,
        description="Most tokens (model rows x padded length) one request may encode to; checked before the model runs.",
    )
    cache_dir: str | None = Field(
        None,
        description="Bundle cache shared by the tiers on this host, one folder per fingerprint (default: "
        "$SPLITSERVE_CACHE_DIR, else splitserve-cache-<uid> in the temp folder).",
    )
    stage_threads: int = Field(
        2, ge=1, description="Threads that run the stage's CPU work (tokenizing, decoding) off the event loop."
    )
    watch_alias: bool = Field(
        False,
        description="Follow the registry alias of the bundle URI (models:/name@alias): when it moves, load the new "
        "version beside the old, switch to it, and unload the old one once unused (zero-error rollouts).",
    )
    watch_interval_s: float = Field(
        10.0, gt=0, description="With --watch-alias: seconds between two polls of the registry."
    )
    retire_after_s: float = Field(
        5.0,
        ge=0,
        description="An old version is unloaded once no request used it for this long and the new one served one; "
        "keep it above the gateway's --tier-refresh-s.",
    )

    @model_validator(mode="after")
    def _checked(self) -> BundleServerSettings:
        check_bundle_flags(self.bundle_uri, self.bundle, self.watch_alias)
        return self


MAX_SOCKET_PATH = 107  # bytes of a Unix-domain socket's path (sun_path less its NUL)
ALIAS_URI = re.compile(r"models:/[^/@]+@[^/@]+")  # a registry alias, which --watch-alias follows


def check_bundle_flags(bundle_uri: str, bundles: list[str] | tuple[str, ...], watch_alias: bool) -> None:
    """BUNDLE_URI, --bundle NAME=URI and --watch-alias as every tier takes them (`splitserve k8s`
    checks them before writing pods that would crash-loop on them)."""
    if watch_alias and not ALIAS_URI.fullmatch(bundle_uri):
        raise ValueError(f"--watch-alias follows a registry alias: give models:/NAME@ALIAS, not {bundle_uri!r}")
    for spec in bundles:
        name, sep, uri = spec.partition("=")
        if not (name and sep and uri):
            raise ValueError(f"--bundle takes NAME=URI, not {spec!r}")
