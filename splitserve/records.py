"""Input records: normalization from what users pass, and validation with precise messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from splitserve.errors import InvalidInput, record_label

# Accepted aliases for the main text field (MLflow users often name the column `content`).
TEXT_ALIASES = ("text", "content", "inputs")
RECORD_FIELDS = ("id", "text", "text_pair", "question", "context", "candidate_labels")
# The context tensor that maps model rows to records, for tasks that make several rows of one
# record (question-answering windows, zero-shot hypotheses): int64 [rows], non-decreasing.
ROW_RECORD = "row_record"


@dataclass
class Record:
    id: str
    text: str | None = None
    text_pair: str | None = None
    question: str | None = None
    context: str | None = None
    candidate_labels: list[str] = field(default_factory=list)


def to_records(inputs: Any) -> list[Record]:
    """Records from a string, a list of strings/dicts, or a pandas DataFrame.

    A dict uses the field names of `Record` (`content` is accepted for `text`). A missing id
    becomes the record's index. Values are type-checked here so that messages name the record
    and the field.
    """
    if isinstance(inputs, str):
        inputs = [inputs]
    elif hasattr(inputs, "to_dict") and hasattr(inputs, "columns"):  # pandas.DataFrame
        inputs = inputs.to_dict(orient="records")
    elif isinstance(inputs, dict):
        inputs = [inputs]
    if not isinstance(inputs, (list, tuple)):
        raise InvalidInput(f"records must be a list of strings or dicts, got {type(inputs).__name__}")
    return [_to_record(i, item) for i, item in enumerate(inputs)]


def _to_record(index: int, item: Any) -> Record:
    if isinstance(item, Record):
        return item
    if isinstance(item, str):
        return Record(id=str(index), text=item)
    if not isinstance(item, dict):
        raise InvalidInput(f"{record_label(index, None)}: expected a string or a dict, got {type(item).__name__}")
    item = dict(item)
    raw_id = item.pop("id", None)
    record_id = str(index) if raw_id is None or raw_id != raw_id else str(raw_id)  # NaN -> index
    where = record_label(index, record_id)
    aliases = [k for k in TEXT_ALIASES if k in item]
    if len(aliases) > 1:
        raise InvalidInput(f"{where}: give the text once, as one of {list(TEXT_ALIASES)}; got {aliases}")
    if aliases:
        item["text"] = item.pop(aliases[0])
    unknown = sorted(set(item) - set(RECORD_FIELDS))
    if unknown:
        raise InvalidInput(f"{where}: unknown field(s) {unknown}; known fields: {list(RECORD_FIELDS[1:])}")
    record = Record(id=record_id)
    for name in ("text", "text_pair", "question", "context"):
        value = item.get(name)
        if value is None or (isinstance(value, float) and value != value):
            continue
        if not isinstance(value, str):
            raise InvalidInput(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
        setattr(record, name, value)
    labels = item.get("candidate_labels")
    if hasattr(labels, "tolist"):  # a numpy array, from a DataFrame column
        labels = labels.tolist()
    if labels is not None and not (isinstance(labels, float) and labels != labels):  # NaN: missing
        if isinstance(labels, str):  # "a, b, c", split as the zero-shot pipeline splits it
            labels = [s.strip() for s in labels.split(",") if s.strip()]
        if not isinstance(labels, (list, tuple)) or not all(isinstance(x, str) for x in labels):
            raise InvalidInput(f"{where}: field 'candidate_labels' must be a list of strings")
        record.candidate_labels = list(labels)
    return record


@dataclass(frozen=True)
class Limits:
    """Request size limits, enforced where records enter a tier."""

    max_records: int = 1024
    max_text_chars: int = 100_000


def _check_request(records: list[Record], limits: Limits) -> None:
    if not records:
        raise InvalidInput("request has no records")
    if len(records) > limits.max_records:
        raise InvalidInput(f"request has {len(records)} records; the limit is {limits.max_records}")


def _check_fields(index: int, record: Record, limits: Limits, required: tuple[str, ...], used: set[str]) -> None:
    """The required string fields are there and not blank; no field is over the size limit or
    unused by the task."""
    where = record_label(index, record.id)
    for name in required:
        value = getattr(record, name)
        if value is None:
            raise InvalidInput(f"{where}: field {name!r} is missing")
        if not value.strip():
            raise InvalidInput(f"{where}: field {name!r} is empty")
    for name in ("text", "text_pair", "question", "context"):
        value = getattr(record, name)
        if value is None:
            continue
        if name not in used:
            raise InvalidInput(f"{where}: field {name!r} is not used by this task")
        if len(value) > limits.max_text_chars:
            raise InvalidInput(
                f"{where}: field {name!r} has {len(value)} characters; the limit is {limits.max_text_chars}"
            )
    if record.candidate_labels and "candidate_labels" not in used:
        raise InvalidInput(f"{where}: field 'candidate_labels' is not used by this task")


def check_text_records(records: list[Record], limits: Limits, allow_pairs: bool) -> bool:
    """Validate records of text tasks; returns whether they carry text pairs."""
    _check_request(records, limits)
    with_pair = [r.text_pair is not None for r in records]
    for i, record in enumerate(records):
        _check_fields(i, record, limits, ("text",), {"text", "text_pair"} if allow_pairs else {"text"})
        if with_pair[i] != with_pair[0]:
            raise InvalidInput(f"{record_label(i, record.id)}: either every record has 'text_pair' or none does")
    return with_pair[0]


def check_qa_records(records: list[Record], limits: Limits) -> None:
    """question-answering: every record has a question and a context."""
    _check_request(records, limits)
    for i, record in enumerate(records):
        _check_fields(i, record, limits, ("question", "context"), {"question", "context"})


def check_zero_shot_records(records: list[Record], limits: Limits, default_labels: list[str] | None) -> list[list[str]]:
    """zero-shot-classification: every record has a text and candidate labels (its own, else the
    `candidate_labels` param's). Returns each record's labels."""
    _check_request(records, limits)
    labels = []
    for i, record in enumerate(records):
        _check_fields(i, record, limits, ("text",), {"text", "candidate_labels"})
        mine = record.candidate_labels or default_labels
        if not mine:
            raise InvalidInput(
                f"{record_label(i, record.id)}: field 'candidate_labels' is missing or empty, and no "
                "param 'candidate_labels' was given"
            )
        labels.append(list(mine))
    return labels
