"""The postprocess stage: model outputs + context -> one typed result per record, or, for a
templated bundle, the template's rows.

Resolves the request's params, checks the tensors' rows against the records, and hands them to
the bundle's task (`Task.decode`); then runs the template (its `postprocess`, if any). Results are
dicts with one key, the task's result kind. Pure Python/numpy: no protobuf, no torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from splitserve.core.bundle import ServingConfig
from splitserve.core.errors import InvalidInput
from splitserve.core.records import Record
from splitserve.stages.template import Template
from splitserve.tasks import get
from splitserve.tasks.base import ROW_RECORD, Assets, Batch


class Postprocessor:
    def __init__(self, config: ServingConfig, tokenizer: Any = None, template: Template | None = None):
        self.task = get(config.task)
        if self.task.decodes_tokens and tokenizer is None:
            raise ValueError(f"task {config.task} needs the bundle's tokenizer")
        self.assets = Assets(config, tokenizer)
        self.template = template

    @property
    def tokenizer(self) -> Any:
        return self.assets.tokenizer

    @property
    def streams(self) -> bool:
        return self.task.streams and self.template is None

    def run(
        self,
        records: list[Record],
        params: dict[str, Any] | None,
        outputs: dict[str, np.ndarray],
        context: dict[str, np.ndarray],
        partial: bool = False,
    ) -> list[dict[str, Any]]:
        """The task's results for the records it encoded. `partial`: a stream's tokens so far,
        decoded for its deltas (with the task's `stream_params`)."""
        task_params = self.template.split(params)[0] if self.template else params
        p = self.task.resolve(self.assets.config, task_params)
        if partial:
            p = {**p, **self.task.stream_params}
        rows = len(records)
        if self.task.multi_row:
            if ROW_RECORD not in context:
                raise InvalidInput(f"context tensor {ROW_RECORD!r} is missing; got {sorted(context)}")
            rows = int(np.asarray(context[ROW_RECORD]).shape[0])
        return self.task.decode(self.assets, Batch(records, outputs, context, rows), p)

    def rows(
        self,
        records: list[Record],
        task_records: list[Record],
        results: list[dict[str, Any]],
        params: dict[str, Any] | None,
    ) -> list[dict[str, Any]]:
        """A templated bundle's answer: the template's rows from the caller's records and the task's results."""
        assert self.template is not None
        return self.template.rows(records, task_records, results, self.template.split(params)[1])
