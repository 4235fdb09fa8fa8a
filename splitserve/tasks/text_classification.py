"""text-classification (and text pairs): logits -> labels with scores, as transformers' pipeline
computes them."""

from __future__ import annotations

from typing import Any

import numpy as np

from protos import splitserve_pb2 as pb
from splitserve.core import params as P
from splitserve.core.errors import InvalidInput, record_label
from splitserve.core.records import Record
from splitserve.tasks.base import TRUNCATION, Assets, Batch, Encoded, ExportFacts, Task, encode_texts, softmax


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def default_function(problem_type: str | None, num_labels: int) -> str:
    """The pipeline's choice when `function_to_apply` is not given."""
    if problem_type == "multi_label_classification" or num_labels == 1:
        return "sigmoid"
    return "softmax"


def label_scores(logits: np.ndarray, function_to_apply: str) -> np.ndarray:
    """[..., num_labels] logits -> scores (float32), each row as the pipeline computes it."""
    logits = logits.astype(np.float32)
    if function_to_apply == "sigmoid":
        return sigmoid(logits)
    if function_to_apply == "softmax":
        return softmax(logits)
    return logits


def ranked(scores: np.ndarray, id2label: dict[int, str], top_k: int | None) -> list[dict]:
    """One record's [num_labels] scores -> [{label, score}] sorted by score (stable), at most top_k."""
    values = scores.tolist()
    order = sorted(range(len(values)), key=values.__getitem__, reverse=True)
    labels = [{"label": id2label[i], "score": values[i]} for i in order]
    return labels if top_k is None else labels[:top_k]


def ranked_labels(
    logits: np.ndarray, id2label: dict[int, str], function_to_apply: str, top_k: int | None
) -> list[dict]:
    """One record's [num_labels] logits -> [{label, score}] sorted by score, at most top_k."""
    return ranked(label_scores(logits, function_to_apply), id2label, top_k)


class TextClassification(Task):
    name = "text-classification"
    aliases = ("sentiment-analysis",)
    params = (
        *TRUNCATION,
        P.Param("top_k", P.optional_positive_int, 1, "long"),  # null: every label
        P.Param("function_to_apply", P.choice("default", "softmax", "sigmoid", "none"), "default", "string"),
    )
    fields = ("text", "text_pair")
    result_kind = "labels"
    example = [{"label": "POSITIVE", "score": 0.98}, {"label": "NEGATIVE", "score": 0.02}]
    export = ExportFacts(("logits",), int8_gate=("label_agreement",), labels=True)
    pair_scoring = "cross-encoder"  # a one-label model over (query, document) pairs: a CrossEncoder

    def check(self, assets: Assets, records: list[Record], p: dict[str, Any]) -> None:
        super().check(assets, records, p)
        for i, record in enumerate(records):
            if (record.text_pair is None) != (records[0].text_pair is None):
                raise InvalidInput(f"{record_label(i, record.id)}: either every record has 'text_pair' or none does")

    def encode(self, assets: Assets, records: list[Record], p: dict[str, Any]) -> Encoded:
        return encode_texts(assets, records, p, pairs=records[0].text_pair is not None)

    def decode(self, assets: Assets, batch: Batch, p: dict[str, Any]) -> list[dict[str, Any]]:
        logits = batch.output(assets.config.model_outputs[0])
        function = p["function_to_apply"]
        if function == "default":
            function = default_function(assets.config.problem_type, logits.shape[-1])
        id2label = assets.config.id2label or {}
        scores = label_scores(logits, function)  # every record's at once
        return [{"labels": ranked(scores[i], id2label, p["top_k"])} for i in range(len(batch.records))]

    def to_pb(self, value: Any) -> pb.Labels:
        return pb.Labels(labels=[pb.LabelScore(label=d["label"], score=d["score"]) for d in value])

    def from_pb(self, message: pb.Labels) -> list[dict[str, Any]]:
        return [{"label": x.label, "score": x.score} for x in message.labels]


TASK = TextClassification()
