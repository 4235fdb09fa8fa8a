"""Postprocessing stage: model outputs + context -> one typed result per record.

Pure Python/numpy: no protobuf, no torch. Shared by the postprocess server and the in-process
pyfunc path. Results are dicts with one key, named for the result kind: `labels`,
`entities` or `embedding`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from postprocess_svc.decoders.classification import decode_labels, default_function
from postprocess_svc.decoders.embeddings import decode_embedding
from splitserve import params as params_mod
from splitserve.bundle import ServingConfig
from splitserve.errors import InvalidInput
from splitserve.records import Record

NEEDS_TOKENIZER = {"token-classification"}


class Postprocessor:
    def __init__(self, config: ServingConfig, tokenizer: Any = None):
        if config.task in NEEDS_TOKENIZER and tokenizer is None:
            raise ValueError(f"task {config.task} needs the bundle's tokenizer")
        self.config = config
        self.tokenizer = tokenizer

    def run(
        self,
        records: list[Record],
        params: dict[str, Any] | None,
        outputs: dict[str, np.ndarray],
        context: dict[str, np.ndarray],
    ) -> list[dict[str, Any]]:
        p = params_mod.resolve(self.config.task, params, self.config.defaults, self.config.max_length)
        main = self._output(outputs, len(records))
        mask = self._context(context, "attention_mask", len(records))
        task = self.config.task
        if task == "feature-extraction":
            return [
                {"embedding": decode_embedding(main[i], mask[i], p["pooling"], p["normalize"])}
                for i in range(len(records))
            ]
        if task == "text-classification":
            id2label = self.config.id2label or {}
            function = p["function_to_apply"]
            if function == "default":
                function = default_function(self.config.problem_type, main.shape[-1])
            return [{"labels": decode_labels(main[i], id2label, function, p["top_k"])} for i in range(len(records))]
        if task == "token-classification":
            from postprocess_svc.decoders.ner import decode_entities

            ids = self._context(context, "input_ids", len(records))
            offsets = self._context(context, "offset_mapping", len(records))
            special = self._context(context, "special_tokens_mask", len(records))
            results = []
            for i, record in enumerate(records):
                keep = mask[i].astype(bool)
                entities = decode_entities(
                    main[i][keep],
                    ids[i][keep],
                    offsets[i][keep],
                    special[i][keep],
                    record.text or "",
                    self.tokenizer,
                    self.config.id2label or {},
                    aggregation_strategy=p["aggregation_strategy"],
                    ignore_labels=p["ignore_labels"],
                )
                results.append({"entities": entities})
            return results
        raise InvalidInput(f"task {task!r} is not supported by this postprocess tier")

    def _output(self, outputs: dict[str, np.ndarray], n: int) -> np.ndarray:
        name = self.config.model_outputs[0]
        if name not in outputs:
            raise InvalidInput(f"model output {name!r} is missing; got {sorted(outputs)}")
        return self._check_batch(name, outputs[name], n)

    def _context(self, context: dict[str, np.ndarray], name: str, n: int) -> np.ndarray:
        if name not in context:
            raise InvalidInput(f"context tensor {name!r} is missing; got {sorted(context)}")
        return self._check_batch(name, context[name], n)

    @staticmethod
    def _check_batch(name: str, array: np.ndarray, n: int) -> np.ndarray:
        if array.ndim == 0 or array.shape[0] != n:
            raise InvalidInput(f"tensor {name!r} has shape {list(array.shape)}; expected {n} records in dim 0")
        return array
