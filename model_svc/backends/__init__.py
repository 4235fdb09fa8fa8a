"""Model backends: `infer(inputs) -> outputs` on numpy arrays, nothing protocol-specific."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from splitserve.bundle import ServingConfig

if TYPE_CHECKING:
    from model_svc.generation import GenerationParams, Job, OnTokens
from splitserve.errors import InvalidInput


class Backend(Protocol):
    name: str
    platform: str

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def generate(
        self, inputs: dict[str, np.ndarray], params: GenerationParams, on_tokens: OnTokens | None = None
    ) -> dict[str, np.ndarray]:
        """Generation bundles: the decoding loop on the prompts (input_ids, attention_mask);
        `on_tokens(row, tokens)` is called as tokens are chosen (streaming)."""
        ...

    def run_jobs(self, jobs: list[Job]) -> list[Any]:
        """Generation bundles: several requests' prompts generated together (`generation.run_jobs`)."""
        ...

    @property
    def max_positions(self) -> int | None:
        """Generation bundles: the positions a decoder-only LM's prompt and new tokens must fit in."""
        ...

    def output_shapes(self) -> dict[str, list[int]]:
        """Output shapes with -1 for variable dimensions (for ModelMetadata)."""
        ...


def check_inputs(inputs: dict[str, np.ndarray], config: ServingConfig, max_batch_size: int) -> None:
    """Refuse inputs the model cannot run, with a message naming the tensor."""
    expected = set(config.model_inputs)
    missing, unknown = sorted(expected - set(inputs)), sorted(set(inputs) - expected)
    if missing or unknown:
        raise InvalidInput(f"model inputs must be {sorted(expected)}; missing {missing}, unexpected {unknown}")
    shape = None
    for name in config.model_inputs:
        array = inputs[name]
        if array.dtype != np.int64:
            raise InvalidInput(f"input {name!r}: datatype must be INT64, got {array.dtype}")
        if array.ndim != 2:
            raise InvalidInput(f"input {name!r}: shape must be [batch, tokens], got {list(array.shape)}")
        if shape is not None and array.shape != shape:
            raise InvalidInput(
                f"input {name!r}: shape {list(array.shape)} differs from {list(shape)} of the other inputs"
            )
        shape = array.shape
    assert shape is not None
    if shape[0] < 1 or shape[1] < 1:
        raise InvalidInput(f"inputs are empty: shape {list(shape)}")
    if shape[0] > max_batch_size:
        raise InvalidInput(f"batch of {shape[0]} rows exceeds max_batch_size {max_batch_size}")
    if shape[1] > config.max_length:
        raise InvalidInput(f"{shape[1]} tokens exceed the model's max length {config.max_length}")
