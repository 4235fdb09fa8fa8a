from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from model_svc.batching import DEFAULT_MAX_PAD_FRACTION
from splitserve.core.records import MAX_RECORDS
from splitserve.core.settings import BundleServerSettings


class ModelSettings(BundleServerSettings):
    """Settings of the model tier (env prefix SPLITSERVE_MODEL_)."""

    model_config = SettingsConfigDict(env_prefix="SPLITSERVE_MODEL_", extra="forbid")

    backend: Literal["onnx", "torch"] = Field(
        "onnx", description="Run the bundle's ONNX graph or the source PyTorch model."
    )
    rest_port: int | None = Field(
        None,
        description="Also serve the Open Inference Protocol over REST (KServe v2: /v2/models/NAME/infer ...) on "
        "this port, with the gRPC port's TLS (0: a free one; unset: no REST).",
    )
    device: Literal["cpu", "cuda"] = Field("cpu", description="Where the model runs.")
    int8_check: Literal["refuse", "warn"] = Field(
        "refuse",
        description="An int8 bundle's graph is checked at start-up against the fp32 answers export recorded, on "
        "this CPU: past its quality gate, refuse to serve it (refuse) or serve it anyway with a warning (warn).",
    )
    dtype: Literal["logged", "fp32", "bf16"] = Field(
        "logged",
        description="PyTorch backend: run the model in the dtype it was logged in, in float32, or in bfloat16 "
        "(fast on CPUs with AVX512_BF16 or AMX).",
    )
    intra_op_threads: int = Field(
        0,
        ge=0,
        description="Intra-op threads of one batch: ONNX Runtime on CPU under load (0: one; see idle_threads), "
        "PyTorch and CUDA always (0: the runtime's default).",
    )
    idle_threads: int = Field(
        0,
        ge=0,
        description="ONNX Runtime on CPU: intra-op threads of a batch that runs alone, nothing else queued or "
        "running (0: every core this process may run on: its CPU affinity, within its cgroup's CPU quota and "
        "OMP_NUM_THREADS where set, as Ray sets it; at most "
        "intra_op_threads: no idle path). Held as a second session of the graph: the replica's memory grows by "
        "about the graph's weights.",
    )
    parallel_batches: int = Field(
        0,
        ge=0,
        description="Batches one replica runs at once under load (0: ONNX Runtime on CPU, the cores this "
        "process may run on over intra_op_threads; otherwise one).",
    )
    max_batch_size: int = Field(
        MAX_RECORDS, ge=1, description="Most rows one request may carry, and one batched inference combines."
    )
    max_batch_tokens: int = Field(
        4096,
        ge=1,
        description="Most rows x padded tokens one batched inference combines (a larger request runs alone).",
    )
    max_pad_fraction: float = Field(
        DEFAULT_MAX_PAD_FRACTION,
        ge=0,
        le=1,
        description="Most of a batch's tokens that may be padding; requests of other lengths run in another batch.",
    )
    max_queue_delay_ms: float = Field(
        0.0,
        ge=0,
        description="How long a request may wait for others to batch with (0: batch only what is already queued).",
    )
    spin_wait: bool = Field(
        False,
        description="Let ONNX Runtime's idle worker threads spin (fastest alone on a machine; burns the CPU "
        "that co-located tiers need).",
    )
    max_queue_size: int = Field(
        4096, ge=1, description="Most rows waiting for inference; past it requests get RESOURCE_EXHAUSTED at once."
    )
