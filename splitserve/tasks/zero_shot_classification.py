"""zero-shot-classification (an NLI model): one (text, hypothesis) pair per record and candidate
label goes to the model; the NLI logits -> labels ranked, as transformers' pipeline scores them."""

from __future__ import annotations

from typing import Any

import numpy as np

from protos import splitserve_pb2 as pb
from splitserve.core import params as P
from splitserve.core.errors import InvalidInput, record_label
from splitserve.core.records import Record
from splitserve.tasks.base import ROW_RECORD, TRUNCATION, Assets, Batch, Encoded, ExportFacts, Task, truncated_ids


def _labels(name: str, value: Any) -> list[str] | None:
    """`candidate_labels`: a list of strings, or one comma-separated string (as the pipeline parses
    it); an empty list means none (records then carry their own)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [label.strip() for label in value.split(",") if label.strip()]
    return P.string_list(name, value) or None


def _template(name: str, value: Any) -> str:
    """`hypothesis_template`: must place the label somewhere, as the pipeline checks."""
    if isinstance(value, str):
        try:
            placed = value.format("label") != value
        except (IndexError, KeyError, ValueError):
            placed = False
        if placed:
            return value
    raise InvalidInput(f"param {name!r}: expected a string with one {{}} where the label goes, got {value!r}")


def entailment_id(id2label: dict[int, str]) -> int:
    """The pipeline's: the id of the first label starting with "entail", else -1 (the last)."""
    for index, label in sorted(id2label.items()):
        if label.lower().startswith("entail"):
            return index
    return -1


def ranked(sequence: str, labels: list[str], logits: np.ndarray, entailment: int, multi_label: bool) -> dict[str, Any]:
    """One record's [labels, NLI classes] logits -> {sequence, labels, scores}, best first.

    multi_label (or a single label): each label alone, softmax of entailment vs contradiction;
    else a softmax of the entailment logits across the labels.
    """
    logits = logits.astype(np.float32)[None]
    if multi_label or len(labels) == 1:
        contradiction = -1 if entailment == 0 else 0
        pair = logits[..., [contradiction, entailment]]
        scores = (np.exp(pair) / np.exp(pair).sum(-1, keepdims=True))[..., 1]
    else:
        entail = logits[..., entailment]
        scores = np.exp(entail) / np.exp(entail).sum(-1, keepdims=True)
    top = list(reversed(scores[0].argsort()))
    return {"sequence": sequence, "labels": [labels[i] for i in top], "scores": scores[0, top].tolist()}


def labels_of(records: list[Record], default: list[str] | None) -> list[list[str]]:
    """Each record's candidate labels: its own, else the `candidate_labels` param's."""
    out = []
    for i, record in enumerate(records):
        mine = record.candidate_labels or default
        if not mine:
            raise InvalidInput(
                f"{record_label(i, record.id)}: field 'candidate_labels' is missing or empty, and no "
                "param 'candidate_labels' was given"
            )
        out.append(list(mine))
    return out


class ZeroShotClassification(Task):
    name = "zero-shot-classification"
    params = (
        *TRUNCATION,
        P.Param("candidate_labels", _labels, None, "string_list"),  # for records that carry none of their own
        P.Param("hypothesis_template", _template, "This example is {}.", "string"),
        P.Param("multi_label", P.boolean, False, "boolean"),
    )
    fields = ("text", "candidate_labels")
    result_kind = "zero_shot"
    example = {
        "sequence": "Angela Merkel met Emmanuel Macron",
        "labels": ["politics", "sports"],
        "scores": [0.97, 0.03],
    }
    multi_row = True
    export = ExportFacts(("logits",), labels=True)  # an NLI sequence classifier

    def check(self, assets: Assets, records: list[Record], p: dict[str, Any]) -> None:
        super().check(assets, records, p)
        labels_of(records, p["candidate_labels"])

    def encode(self, assets: Assets, records: list[Record], p: dict[str, Any]) -> Encoded:
        """The text truncated (only_first) so that the hypothesis is kept."""
        premises, hypotheses, rows, row_labels = [], [], [], []
        for i, (record, mine) in enumerate(zip(records, labels_of(records, p["candidate_labels"]), strict=True)):
            for label in mine:
                premises.append(record.text or "")  # a required field
                hypotheses.append(p["hypothesis_template"].format(label))
                rows.append(i)
                row_labels.append(label)
        truncation = "only_first" if p["truncation"] else False
        max_length = p["max_length"] if p["truncation"] else None
        try:
            enc = assets.encode(
                premises, hypotheses, truncation=p["truncation"], max_length=max_length, strategy="only_first"
            )
        except Exception:  # noqa: BLE001 - the tokenizers library raises a bare Exception; find the record
            for premise, hypothesis, i, label in zip(premises, hypotheses, rows, row_labels, strict=True):
                try:
                    assets.tokenizer(premise, hypothesis, truncation=truncation, max_length=max_length)
                except Exception:  # noqa: BLE001
                    short = label if len(label) <= 40 else label[:40] + "…"
                    raise InvalidInput(
                        f"{record_label(i, records[i].id)}: field 'candidate_labels': the hypothesis for label "
                        f"{short!r} leaves no room for field 'text' within {max_length} tokens"
                    ) from None
            raise
        if not p["truncation"]:
            assets.check_lengths(enc, records, rows)
        context = {
            ROW_RECORD: np.asarray(rows, dtype=np.int64),
            "attention_mask": enc["attention_mask"].astype(np.int64),
        }
        return Encoded(
            model_inputs=assets.model_inputs(enc), context=context, truncated=truncated_ids(enc, records, rows)
        )

    def decode(self, assets: Assets, batch: Batch, p: dict[str, Any]) -> list[dict[str, Any]]:
        logits = batch.output(assets.config.model_outputs[0])
        entailment = entailment_id(assets.config.id2label or {})
        results = []
        for i, (record, rows) in enumerate(zip(batch.records, batch.record_rows(), strict=True)):
            labels = record.candidate_labels or p["candidate_labels"] or []
            if len(rows) != len(labels):
                raise InvalidInput(
                    f"{record_label(i, record.id)}: {len(rows)} model rows for {len(labels)} candidate labels"
                )
            results.append({"zero_shot": ranked(record.text or "", labels, logits[rows], entailment, p["multi_label"])})
        return results

    def to_pb(self, value: Any) -> pb.ZeroShot:
        return pb.ZeroShot(sequence=value["sequence"], labels=value["labels"], scores=value["scores"])

    def from_pb(self, message: pb.ZeroShot) -> dict[str, Any]:
        return {"sequence": message.sequence, "labels": list(message.labels), "scores": list(message.scores)}


TASK = ZeroShotClassification()
