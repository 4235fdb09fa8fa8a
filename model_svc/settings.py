from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from splitserve.settings import BundleServerSettings


class ModelSettings(BundleServerSettings):
    """Settings of the model tier (env prefix SPLITSERVE_MODEL_)."""

    model_config = SettingsConfigDict(env_prefix="SPLITSERVE_MODEL_", extra="forbid")

    backend: Literal["onnx", "torch"] = Field(
        "onnx", description="Run the bundle's ONNX graph or the source PyTorch model."
    )
    device: Literal["cpu", "cuda"] = Field("cpu", description="Where the model runs.")
    intra_op_threads: int = Field(
        0, description="Intra-op threads for ONNX Runtime / PyTorch (0: the runtime's default)."
    )
    max_batch_size: int = Field(1024, description="Most rows one inference may carry.")
