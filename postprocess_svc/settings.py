from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from splitserve.core.settings import BundleServerSettings


class PostprocessSettings(BundleServerSettings):
    """Settings of the postprocess tier (env prefix SPLITSERVE_POST_)."""

    model_config = SettingsConfigDict(env_prefix="SPLITSERVE_POST_", extra="forbid")
