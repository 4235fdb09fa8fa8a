from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from splitserve.settings import ServerSettings


class GatewaySettings(ServerSettings):
    """Settings of the gateway (env prefix SPLITSERVE_GATEWAY_)."""

    model_config = SettingsConfigDict(env_prefix="SPLITSERVE_GATEWAY_", extra="forbid")

    preprocess: list[str] = Field(..., description="Preprocess replicas (host:port ...).")
    model: list[str] = Field(..., description="Model-tier replicas (host:port ...).")
    postprocess: list[str] = Field(..., description="Postprocess replicas (host:port ...).")
    max_in_flight: int = Field(256, description="Requests in progress at once; more get RESOURCE_EXHAUSTED.")
    max_records: int = Field(1024, description="Most records one request may carry.")
    timeout_s: float = Field(30.0, description="Deadline for a request whose client sets none.")
    max_attempts: int = Field(3, description="Attempts per downstream call on UNAVAILABLE (other replicas).")
