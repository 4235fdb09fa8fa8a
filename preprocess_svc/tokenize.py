"""Tokenization stage: records + params -> model inputs and post-processing context.

Pure Python/numpy: no protobuf, no torch. Shared by the preprocess server and the in-process
pyfunc path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from splitserve import params as params_mod
from splitserve.bundle import ServingConfig
from splitserve.errors import InvalidInput, record_label
from splitserve.records import Limits, Record, check_text_records

PAIR_TASKS = {"text-classification"}


@dataclass
class Encoded:
    model_inputs: dict[str, np.ndarray]  # what the model tier runs on
    context: dict[str, np.ndarray]  # what the postprocess tier needs besides model outputs


class Preprocessor:
    def __init__(self, config: ServingConfig, tokenizer: Any, limits: Limits | None = None):
        self.config = config
        self.tokenizer = tokenizer
        self.limits = limits or Limits()

    def resolve_params(self, params: dict[str, Any] | None) -> dict[str, Any]:
        return params_mod.resolve(self.config.task, params, self.config.defaults, self.config.max_length)

    def run(self, records: list[Record], params: dict[str, Any] | None = None) -> Encoded:
        resolved = self.resolve_params(params)
        task = self.config.task
        has_pairs = check_text_records(records, self.limits, allow_pairs=task in PAIR_TASKS)
        texts = [r.text for r in records]
        pairs = [r.text_pair for r in records] if has_pairs else None
        want_offsets = task == "token-classification"
        enc = self.tokenizer(
            texts,
            pairs,
            padding=True,  # dynamic padding: to the longest record of this request
            truncation=resolved["truncation"],
            max_length=resolved["max_length"] if resolved["truncation"] else None,
            return_tensors="np",
            return_offsets_mapping=want_offsets,
            return_special_tokens_mask=want_offsets,
        )
        if not resolved["truncation"]:
            lengths = enc["attention_mask"].sum(axis=1)
            for i, n in enumerate(lengths):
                if n > self.config.max_length:
                    raise InvalidInput(
                        f"{record_label(i, records[i].id)}: field 'text' is {int(n)} tokens long; the model "
                        f"takes at most {self.config.max_length} (set param truncation=true)"
                    )
        model_inputs = {}
        for name in self.config.model_inputs:
            if name in enc:
                model_inputs[name] = enc[name].astype(np.int64)
            elif name == "token_type_ids":
                model_inputs[name] = np.zeros_like(enc["input_ids"], dtype=np.int64)
            else:
                raise RuntimeError(f"the tokenizer does not produce model input {name!r}")
        context = {"attention_mask": enc["attention_mask"].astype(np.int64)}
        if want_offsets:
            context["input_ids"] = enc["input_ids"].astype(np.int64)
            context["offset_mapping"] = enc["offset_mapping"].astype(np.int64)
            context["special_tokens_mask"] = enc["special_tokens_mask"].astype(np.int64)
        return Encoded(model_inputs=model_inputs, context=context)
