"""The preprocess stage: records + params -> model inputs, context and model parameters.

Resolves the request's params, checks its records, and hands them to the bundle's task
(`Task.encode`). Pure Python/numpy: no protobuf, no torch.
"""

from __future__ import annotations

from typing import Any

from splitserve.core.bundle import ServingConfig
from splitserve.core.records import Limits, Record
from splitserve.tasks import get
from splitserve.tasks.base import Encoded, Stage


class Preprocessor:
    def __init__(self, config: ServingConfig, tokenizer: Any, limits: Limits | None = None):
        self.task = get(config.task)
        self.stage = Stage(config, tokenizer, limits or Limits())

    @property
    def tokenizer(self) -> Any:
        return self.stage.tokenizer

    def resolve_params(self, params: dict[str, Any] | None) -> dict[str, Any]:
        return self.task.resolve(self.stage.config, params)

    def run(self, records: list[Record], params: dict[str, Any] | None = None) -> Encoded:
        resolved = self.resolve_params(params)
        self.task.check(self.stage, records, resolved)
        return self.task.encode(self.stage, records, resolved)
