from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from splitserve.core.settings import BundleServerSettings


class PreprocessSettings(BundleServerSettings):
    """Settings of the preprocess tier (env prefix SPLITSERVE_PRE_)."""

    model_config = SettingsConfigDict(env_prefix="SPLITSERVE_PRE_", extra="forbid")
