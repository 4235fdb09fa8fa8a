"""The preprocess stage: records + params -> model inputs, context and model parameters.

Resolves the request's params, runs the bundle's template (its `preprocess`, if any), checks the
records and hands them to the bundle's task (`Task.encode`). Pure Python/numpy: no protobuf, no
torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from splitserve.core.bundle import ServingConfig
from splitserve.core.encoder import text_encoder
from splitserve.core.records import Limits, Record, check_no_extra
from splitserve.stages.template import Template
from splitserve.tasks import get
from splitserve.tasks.base import Assets, Encoded


@dataclass
class Prepared(Encoded):
    # The records the task encoded, when a template's preprocess made them (else None: the caller's).
    task_records: list[Record] | None = None
    # The effective params as canonical JSON when the answer is deterministic (see `cache_params`).
    cache_params: str = ""


class Preprocessor:
    def __init__(
        self,
        config: ServingConfig,
        tokenizer: Any,
        limits: Limits | None = None,
        template: Template | None = None,
        features: Any = None,
    ):
        self.task = get(config.task)
        # How texts become tokens, chosen once here: `tokenizers` directly where its answers are
        # transformers' (`splitserve.core.encoder`).
        self.assets = Assets(config, tokenizer, limits or Limits(), features, text_encoder(tokenizer))
        self.template = template

    @property
    def tokenizer(self) -> Any:
        return self.assets.tokenizer

    @property
    def streams(self) -> bool:
        """PredictStream sends text as it is generated (a templated bundle answers with rows, at the end)."""
        return self.task.streams and self.template is None

    def resolve_params(self, params: dict[str, Any] | None) -> dict[str, Any]:
        """The task's params, resolved (the template's own are left out)."""
        task_params = self.template.split(params)[0] if self.template else params
        return self.task.resolve(self.assets.config, task_params)

    def run(self, records: list[Record], params: dict[str, Any] | None = None) -> Prepared:
        task_records = None
        if self.template is None:
            check_no_extra(records)
            task_params = params
        else:
            task_params, own = self.template.split(params)
            records = self.template.preprocess(records, own)
            if self.template.preprocess_hook is not None:
                task_records = records
        resolved = self.task.resolve(self.assets.config, task_params)
        self.task.check(self.assets, records, resolved)
        encoded = self.task.encode(self.assets, records, resolved)
        return Prepared(
            encoded.model_inputs,
            encoded.context,
            encoded.model_params,
            encoded.truncated,
            task_records,
            self.cache_params(resolved),
        )

    def cache_params(self, resolved: dict[str, Any]) -> str:
        """The resolved params as canonical JSON, what the gateway's response cache keys a record's
        answer on; empty when the answer must not be cached: sampled generation, and a templated
        bundle (its rows are not one answer per record, and its code may do anything)."""
        if self.template is not None or not self.task.deterministic(resolved):
            return ""
        try:
            return json.dumps(resolved, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr)
        except (TypeError, ValueError):  # params JSON cannot say one way (keys of mixed types): not cached
            return ""
