"""The three stages chained in one process, with no servers: what the pyfunc model runs.

The same stage code as the tiers; only the transport differs. The model is handed in (the
program that builds a pipeline picks the backend: `splitserve.inprocess`), as a callable
`(model inputs, model parameters) -> model outputs`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from splitserve.core.records import Record, to_records
from splitserve.stages.postprocess import Postprocessor
from splitserve.stages.preprocess import Preprocessor

RunModel = Callable[[dict[str, np.ndarray], dict[str, Any]], dict[str, np.ndarray]]


class Pipeline:
    def __init__(self, pre: Preprocessor, run_model: RunModel, post: Postprocessor):
        self.pre, self.run_model, self.post = pre, run_model, post
        self.last_truncated: list[str] = []

    def predict(self, records: Any, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Results as the gateway client returns them: [{"id": ..., <kind>: ...}, ...], or a
        templated bundle's rows."""
        recs: list[Record] = to_records(records, extra=True, local_files=True)  # the caller's own files
        encoded = self.pre.run(recs, params)
        self.last_truncated = encoded.truncated  # the ids of the records truncation cut
        outputs = self.run_model(encoded.model_inputs, encoded.model_params)
        task_records = encoded.task_records if encoded.task_records is not None else recs
        results = self.post.run(task_records, params, outputs, encoded.context)
        if self.post.template is not None:
            return self.post.rows(recs, task_records, results, params)
        task = self.post.task
        return [
            {"id": r.id, task.result_kind: task.plain(res[task.result_kind])}
            for r, res in zip(recs, results, strict=True)
        ]
