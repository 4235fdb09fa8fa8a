from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from splitserve.core.audio import MAX_AUDIO_BYTES, MAX_AUDIO_SECONDS
from splitserve.core.settings import BundleServerSettings


class PreprocessSettings(BundleServerSettings):
    """Settings of the preprocess tier (env prefix SPLITSERVE_PRE_)."""

    model_config = SettingsConfigDict(env_prefix="SPLITSERVE_PRE_", extra="forbid")

    max_audio_seconds: float = Field(MAX_AUDIO_SECONDS, description="Longest audio (in seconds) one record may carry.")
    max_audio_bytes: int = Field(MAX_AUDIO_BYTES, description="Most bytes of audio one request may carry.")
