"""token-classification (NER): logits -> entities, as transformers' pipeline finds them, with
every aggregation strategy and `stride` (long texts in overlapping windows). The per-window
decoding is a numpy port of the pipeline's postprocessing (`entities`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from protos import splitserve_pb2 as pb
from splitserve.core import params as P
from splitserve.core.bundle import ServingConfig
from splitserve.core.errors import InvalidInput
from splitserve.core.records import Record
from splitserve.tasks.base import ROW_RECORD, TRUNCATION, Assets, Batch, Encoded, ExportFacts, Task, encode_texts
from splitserve.tasks.entities import AGGREGATION_STRATEGIES, decode_entities

__all__ = ["AGGREGATION_STRATEGIES", "TASK", "decode_entities", "overlapping"]


def overlapping(entities: list[dict]) -> list[dict]:
    """The pipeline's `aggregate_overlapping_entities`: of the entities the windows found where
    they overlap, the longest (then the highest-scoring) one."""
    if not entities:
        return entities
    entities = sorted(entities, key=lambda x: x["start"])
    aggregated = []
    previous = entities[0]
    for entity in entities:
        if previous["start"] <= entity["start"] < previous["end"]:
            current_length = entity["end"] - entity["start"]
            previous_length = previous["end"] - previous["start"]
            if current_length > previous_length or (
                current_length == previous_length and entity["score"] > previous["score"]
            ):
                previous = entity
        else:
            aggregated.append(previous)
            previous = entity
    aggregated.append(previous)
    return aggregated


class TokenClassification(Task):
    name = "token-classification"
    aliases = ("ner",)
    params = (
        *TRUNCATION,
        P.Param("aggregation_strategy", P.choice(*AGGREGATION_STRATEGIES), "none", "string"),
        P.Param("ignore_labels", P.string_list, ["O"], "string_list"),
        # The whole text in windows of max_length tokens overlapping by `stride` (the pipeline's);
        # None: truncated to max_length.
        P.Param("stride", P.optional_non_negative_int, None, "long"),
    )
    result_kind = "entities"
    example = [{"entity_group": "PER", "score": 0.99, "word": "angela merkel", "start": 0, "end": 13}]
    decodes_tokens = True
    multi_row = True  # with `stride`, a long text is several windows
    export = ExportFacts(("logits",), int8_gate=("label_agreement",), labels=True)

    def resolve(self, config: ServingConfig, params: dict[str, Any] | None) -> dict[str, Any]:
        resolved = super().resolve(config, params)
        if resolved["stride"] is not None:  # the pipeline's checks
            if resolved["stride"] >= resolved["max_length"]:
                raise InvalidInput(
                    f"param 'stride': {resolved['stride']} must be less than max_length ({resolved['max_length']})"
                )
            if resolved["aggregation_strategy"] == "none":
                raise InvalidInput(
                    "param 'stride' processes the whole text, which needs an aggregation_strategy other than 'none'"
                )
        return resolved

    def encode(self, assets: Assets, records: list[Record], p: dict[str, Any]) -> Encoded:
        if p["stride"] is None:
            encoded = encode_texts(assets, records, p, offsets=True)
            encoded.context[ROW_RECORD] = np.arange(len(records), dtype=np.int64)
            return encoded
        window = p["max_length"] - assets.tokenizer.num_special_tokens_to_add()
        if p["stride"] >= window:  # tokenizers would panic
            raise InvalidInput(
                f"param 'stride': {p['stride']} must be less than max_length less the special tokens ({window})"
            )
        enc = assets.encode(
            [r.text or "" for r in records],
            truncation=True,
            max_length=p["max_length"],
            stride=p["stride"],
            overflow=True,
            offsets=True,
        )
        context = {
            ROW_RECORD: enc["overflow_to_sample_mapping"].astype(np.int64),
            "attention_mask": enc["attention_mask"].astype(np.int64),
            "input_ids": enc["input_ids"].astype(np.int64),
            "offset_mapping": enc["offset_mapping"].astype(np.int64),
            "special_tokens_mask": enc["special_tokens_mask"].astype(np.int64),
        }
        return Encoded(model_inputs=assets.model_inputs(enc), context=context)

    def decode(self, assets: Assets, batch: Batch, p: dict[str, Any]) -> list[dict[str, Any]]:
        logits, mask = batch.output(assets.config.model_outputs[0]), batch.ctx("attention_mask")
        ids, offsets, special = batch.ctx("input_ids"), batch.ctx("offset_mapping"), batch.ctx("special_tokens_mask")
        results = []
        for record, rows in zip(batch.records, batch.record_rows(), strict=True):
            entities = []
            for row in rows:
                keep = mask[row].astype(bool)
                entities += decode_entities(
                    logits[row][: len(keep)][keep],
                    ids[row][keep],
                    offsets[row][keep],
                    special[row][keep],
                    record.text or "",
                    assets.tokenizer,
                    assets.config.id2label or {},
                    aggregation_strategy=p["aggregation_strategy"],
                    ignore_labels=p["ignore_labels"],
                )
            results.append({"entities": overlapping(entities) if len(rows) > 1 else entities})
        return results

    def to_pb(self, value: Any) -> pb.Entities:
        entities = []
        for d in value:
            e = pb.Entity(score=d["score"], word=d["word"])
            for key in ("entity_group", "entity"):
                if key in d:
                    setattr(e, key, d[key])
            for key in ("start", "end", "index"):
                if d.get(key) is not None:
                    setattr(e, key, int(d[key]))
            entities.append(e)
        return pb.Entities(entities=entities)

    def from_pb(self, message: pb.Entities) -> list[dict[str, Any]]:
        entities = []
        for e in message.entities:
            d: dict[str, Any] = {"entity_group": e.entity_group} if e.entity_group else {"entity": e.entity}
            d["score"] = e.score
            if e.HasField("index"):
                d["index"] = e.index
            d["word"] = e.word
            d["start"] = e.start if e.HasField("start") else None
            d["end"] = e.end if e.HasField("end") else None
            entities.append(d)
        return entities


TASK = TokenClassification()
