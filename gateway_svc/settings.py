from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from splitserve.core.limits import MAX_REQUEST_CHARS
from splitserve.core.records import MAX_RECORDS
from splitserve.core.settings import ServerSettings


class GatewaySettings(ServerSettings):
    """Settings of the gateway (env prefix SPLITSERVE_GATEWAY_)."""

    model_config = SettingsConfigDict(env_prefix="SPLITSERVE_GATEWAY_", extra="forbid")

    preprocess: list[str] = Field([], description="Preprocess replicas (host:port ..., or unix:PATH ...).")
    model: list[str] = Field(..., description="Model-tier replicas (host:port ..., or unix:PATH ...).")
    postprocess: list[str] = Field([], description="Postprocess replicas (host:port ..., or unix:PATH ...).")
    inline_stages: str | None = Field(
        None,
        description=(
            "A serving bundle URI: run its preprocess and postprocess stages inside the gateway instead of "
            "calling their tiers (one network hop per request instead of three; for latency, on one machine)."
        ),
    )
    rest_port: int | None = Field(
        None,
        description="Also serve the REST API (/v1/predict, OpenAI-compatible /v1/...) on this port, with the "
        "gRPC port's TLS and tokens (0: a free one; unset: no REST).",
    )
    max_in_flight: int = Field(256, description="Requests in progress at once; more get RESOURCE_EXHAUSTED.")
    max_in_flight_records: int = Field(
        8192,
        ge=1,
        description="Records in progress at once; more, or more than can be served within a request's deadline "
        "at the rate of recent requests, get RESOURCE_EXHAUSTED at once.",
    )
    max_records: int = Field(MAX_RECORDS, description="Most records one request may carry.")
    max_request_chars: int = Field(
        MAX_REQUEST_CHARS, ge=1, description="Most characters of text one request may carry (all its records)."
    )
    timeout_s: float = Field(30.0, description="Deadline for a request whose client sets none.")
    cache_bytes: int = Field(
        0,
        ge=0,
        description="Keep deterministic answers, per record, in a response cache of at most this many bytes "
        "(least recently used out first; keyed by bundle fingerprint, record and effective params; never "
        "sampled generation). 0: no cache.",
    )
    tier_refresh_s: float = Field(
        1.0,
        gt=0,
        description="Seconds between two asks of the tiers' versions; requests go to the newest one every tier holds.",
    )
    max_attempts: int = Field(3, description="Attempts per downstream call on UNAVAILABLE (other replicas).")
    dns_refresh_s: float = Field(
        5.0, ge=0, description="Least time between two DNS resolutions of a dns:/// tier address (gRPC's is 30 s)."
    )
    keepalive_s: float = Field(
        10.0, ge=0, description="Ping each tier connection this often to notice a host that went away (0: never)."
    )
    keepalive_timeout_s: float = Field(5.0, gt=0, description="A ping unanswered this long closes its connection.")

    tier_tls_ca: str | None = Field(
        None, description="PEM CA file: call the tiers over TLS, trusting the certificates it signed."
    )
    tier_tls_cert: str | None = Field(None, description="PEM client certificate for the tiers (mutual TLS).")
    tier_tls_key: str | None = Field(None, description="PEM private key file of --tier-tls-cert.")
    tier_tls_server_name: str | None = Field(
        None, description="Name the tiers' certificates are checked against (default: the address's host)."
    )
    auth_token_file: str | None = Field(
        None,
        description="File of accepted tokens, one per line: Gateway calls must send 'authorization: Bearer "
        "<token>' (health and reflection stay open).",
    )

    @model_validator(mode="after")
    def _tiers(self) -> GatewaySettings:
        if self.inline_stages is None and not (self.preprocess and self.postprocess):
            raise ValueError("give the preprocess and postprocess replicas, or --inline-stages BUNDLE_URI")
        if self.inline_stages is not None and (self.preprocess or self.postprocess):
            raise ValueError(
                "--inline-stages runs the preprocess and postprocess stages here: give no replicas for them"
            )
        return self
