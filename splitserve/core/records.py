"""Input records: normalization from what users pass, and validation with precise messages.

A record has the fields the tasks read (`text`, `text_pair`, `question`, `context`,
`candidate_labels`, `audio` with its `sampling_rate`, `messages`: a chat for text-generation,
`token_ids`: the model's own tokens instead of text, for feature-extraction; `query` and `table`, a
JSON object of columns, for table-question-answering) and, for a templated
bundle, the caller's other fields (`extra`, JSON values),
which the template reads and the task ignores; bundles without a template refuse them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from splitserve.core import audio as A
from splitserve.core.errors import InvalidInput, record_label, shown

# Accepted aliases for the main text field (MLflow users often name the column `content`).
TEXT_ALIASES = ("text", "content", "inputs")
RECORD_FIELDS = (
    "id",
    "text",
    "text_pair",
    "question",
    "context",
    "candidate_labels",
    "audio",
    "sampling_rate",
    "messages",
    "token_ids",
    "query",
    "table",
)
# `table`: a JSON object of columns (a dict given here is serialized, as MLflow's pyfunc does).
STRING_FIELDS = ("text", "text_pair", "question", "context", "query", "table")
# The most records one request may carry, and the longest text, unless a tier's settings say otherwise.
MAX_RECORDS = 1024
MAX_TEXT_CHARS = 100_000
# The longest record id: echoed in results, messages and traces, so bounded like a text (never a setting).
MAX_ID_CHARS = 4096


@dataclass
class Record:
    id: str
    text: str | None = None
    text_pair: str | None = None
    question: str | None = None
    context: str | None = None
    candidate_labels: list[str] = field(default_factory=list)
    messages: list[dict[str, str]] = field(default_factory=list)  # a chat: {"role", "content"} each
    # The caller's other fields (JSON values), and its id when that was not a string.
    extra: dict[str, Any] = field(default_factory=dict)
    text_field: str = "text"  # the name the caller gave the text ("content", "inputs")
    # Audio: the bytes of a file, or float32 samples (1-D) with their rate.
    audio: bytes | Any | None = None
    sampling_rate: int | None = None
    token_ids: list[int] | None = None  # the model's own token ids instead of text, used as given
    query: str | None = None  # table-question-answering: the question about `table`
    table: str | None = None  # table-question-answering: a JSON object of columns (name -> cells)

    def as_dict(self) -> dict[str, Any]:
        """The record as the caller sent it: its own field names, its own id, every extra field."""
        out: dict[str, Any] = {"id": self.id}
        for name in STRING_FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[self.text_field if name == "text" else name] = value
        if self.candidate_labels:
            out["candidate_labels"] = list(self.candidate_labels)
        if self.messages:
            out["messages"] = [dict(m) for m in self.messages]
        if self.audio is not None:
            out["audio"] = self.audio
        if self.sampling_rate is not None:
            out["sampling_rate"] = self.sampling_rate
        if self.token_ids is not None:
            out["token_ids"] = list(self.token_ids)
        return {**out, **self.extra}

    @property
    def source_id(self) -> Any:
        """The id as the caller gave it (an int stays an int)."""
        return self.extra.get("id", self.id)


def to_records(inputs: Any, extra: bool = False, local_files: bool = False) -> list[Record]:
    """Records from what MLflow's pyfunc takes: a string, a list (or numpy array, or pandas
    Series) of strings/dicts, a dict (one record, or columns: a dict of equally long lists), or a
    pandas DataFrame.

    Audio: a bare `bytes` item is `{"audio": ...}` (a file's bytes); with `local_files` (the
    caller's own side: the client, the in-process pipeline) an `audio` that is a path is read.

    A dict uses the field names of `Record` (`content` is accepted for `text`). A missing id
    becomes the record's index. Values are type-checked here so that messages name the record
    and the field. Other fields are refused, unless `extra`: then they are kept, as JSON values,
    in `Record.extra` (for a templated bundle; a bundle without a template refuses them).
    """
    samples = type(inputs).__name__ == "ndarray" and getattr(inputs, "ndim", 0) == 1 and inputs.dtype.kind == "f"
    if isinstance(inputs, (str, bytes)) or samples:
        inputs = [inputs]  # one text, one audio file, one array of samples
    elif hasattr(inputs, "to_dict") and hasattr(inputs, "columns"):  # pandas.DataFrame
        inputs = inputs.to_dict(orient="records")
    elif hasattr(inputs, "tolist") and not isinstance(inputs, (str, bytes)):  # numpy array, pandas Series
        inputs = inputs.tolist()
    elif isinstance(inputs, dict):
        inputs = _columns(inputs) or [inputs]
    if not isinstance(inputs, (list, tuple)):
        raise InvalidInput(f"records must be a list of strings or dicts, got {type(inputs).__name__}")
    return [_to_record(i, item, extra, local_files) for i, item in enumerate(inputs)]


def _columns(data: dict[str, Any]) -> list[dict[str, Any]] | None:
    """A dict of equally long lists, as records (a zero-shot record's own `candidate_labels`
    list beside a string `text` is one record, not columns)."""
    values = [plain(v) for v in data.values()]
    ids = plain(data.get("token_ids"))
    if isinstance(ids, list) and ids and not isinstance(plain(ids[0]), list):
        return None  # one record's own token ids, not a column of them
    if not values or not all(isinstance(v, list) for v in values) or len({len(v) for v in values}) != 1:
        return None
    return [dict(zip(data, row, strict=True)) for row in zip(*values, strict=True)]


def _to_record(index: int, item: Any, keep_extra: bool, local_files: bool = False) -> Record:
    if isinstance(item, Record):
        return item
    if isinstance(item, str):
        return Record(id=str(index), text=item)
    if isinstance(item, (bytes, bytearray)) or type(item).__name__ == "ndarray":
        item = {"audio": item}  # a file's bytes, or samples (which need a sampling_rate)
    if not isinstance(item, dict):
        raise InvalidInput(f"{record_label(index, None)}: expected a string or a dict, got {type(item).__name__}")
    item = dict(item)
    raw_id = plain(item.pop("id", None))
    record_id = str(index) if raw_id is None or raw_id != raw_id else str(raw_id)  # NaN -> index
    where = record_label(index, record_id)
    for name in [k for k in TEXT_ALIASES if k in item and plain(item[k]) is None]:
        del item[name]  # a DataFrame's missing cell (NaN) in one of the text columns
    aliases = [k for k in TEXT_ALIASES if k in item]
    if len(aliases) > 1:
        raise InvalidInput(f"{where}: give the text once, as one of {list(TEXT_ALIASES)}; got {aliases}")
    record = Record(id=record_id)
    if aliases:
        record.text_field = aliases[0]
        item["text"] = item.pop(aliases[0])
    unknown = sorted(set(item) - set(RECORD_FIELDS))
    if unknown and not keep_extra:
        raise unknown_fields(where, unknown)
    for name in unknown:
        record.extra[name] = json_value(where, name, item[name])
    if raw_id is not None and raw_id == raw_id and not isinstance(raw_id, str):
        record.extra["id"] = json_value(where, "id", raw_id)
    if isinstance(item.get("table"), dict):  # a table of columns, as JSON (MLflow's pyfunc does the same)
        item["table"] = json.dumps(json_value(where, "table", item["table"]), ensure_ascii=False)
    for name in STRING_FIELDS:
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
    if plain(item.get("messages")) is not None:  # None or NaN: missing
        record.messages = _messages(where, item["messages"])
    if plain(item.get("token_ids")) is not None:  # None or NaN: missing
        record.token_ids = _token_ids(where, item["token_ids"])
    _audio_fields(record, item, where, local_files)
    return record


def _token_ids(where: str, value: Any) -> list[int]:
    value = plain(value)
    if isinstance(value, (list, tuple)):
        value = [plain(v) for v in value]  # numpy integers, from a DataFrame's cells
    if (
        not isinstance(value, (list, tuple))
        or not value
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise InvalidInput(f"{where}: field 'token_ids' must be a non-empty list of integers (the model's token ids)")
    wide = next((v for v in value if not -(2**63) <= v < 2**63), None)
    if wide is not None:
        raise InvalidInput(f"{where}: field 'token_ids' has id {shown(wide)}, outside the vocabulary")
    return list(value)


def _messages(where: str, value: Any) -> list[dict[str, str]]:
    """A chat: a non-empty list of {"role": str, "content": str} (OpenAI's list of text parts
    is joined into one string)."""
    value = plain(value)
    if not isinstance(value, (list, tuple)) or not value:
        raise InvalidInput(f"{where}: field 'messages' must be a non-empty list of {{'role', 'content'}} objects")
    out = []
    for i, m in enumerate(value):
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
            content = "".join(str(p.get("text", "")) for p in content)
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(content, str):
            raise InvalidInput(f"{where}: field 'messages' item {i} must be {{'role': str, 'content': str}}")
        out.append({"role": m["role"], "content": content})
    return out


def _audio_fields(record: Record, item: dict[str, Any], where: str, local_files: bool) -> None:
    audio = item.get("audio")
    if audio is not None and not (isinstance(audio, float) and audio != audio):  # NaN: a DataFrame's missing cell
        record.audio = A.samples_of(where, A.local_audio(where, audio) if local_files else audio)
    rate = plain(item.get("sampling_rate"))
    if rate is not None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or int(rate) != rate or rate <= 0:
            raise InvalidInput(f"{where}: field 'sampling_rate' must be a positive integer (Hz), got {rate!r}")
        record.sampling_rate = int(rate)


@dataclass(frozen=True)
class Limits:
    """Request size limits, enforced where records enter a tier."""

    max_records: int = MAX_RECORDS
    max_text_chars: int = MAX_TEXT_CHARS
    max_audio_seconds: float = A.MAX_AUDIO_SECONDS  # per record
    max_audio_bytes: int = A.MAX_AUDIO_BYTES  # per request


def check_request(records: list[Record], limits: Limits) -> None:
    if not records:
        raise InvalidInput("request has no records")
    if len(records) > limits.max_records:
        raise InvalidInput(f"request has {len(records)} records; the limit is {limits.max_records}")
    check_ids(records)


def check_ids(records: Any) -> None:
    """No record id (protobuf records or `Record`s) past MAX_ID_CHARS."""
    for index, record in enumerate(records):
        if len(record.id) > MAX_ID_CHARS:
            raise InvalidInput(
                f"{record_label(index, record.id)}: field 'id' has {len(record.id)} characters; "
                f"the limit is {MAX_ID_CHARS}"
            )


def check_records(records: list[Record], limits: Limits, required: tuple[str, ...], used: tuple[str, ...]) -> None:
    """The request's size, and every record's fields: the `required` string fields are there and not
    blank (`token_ids`, where the task reads them, stand for `text`); no field is over the size
    limit or unused by the task (`used`)."""
    check_request(records, limits)
    audio_bytes = sum(A.audio_nbytes(r.audio) for r in records if r.audio is not None)
    if audio_bytes > limits.max_audio_bytes:
        raise InvalidInput(f"request has {audio_bytes} bytes of audio; the limit is {limits.max_audio_bytes}")
    for index, record in enumerate(records):
        where = record_label(index, record.id)
        if record.token_ids is not None:
            if "token_ids" not in used:
                raise InvalidInput(
                    f"{where}: field 'token_ids' is not used by this task (token ids are for feature-extraction)"
                )
            if record.text is not None:
                raise InvalidInput(f"{where}: give field 'text' or field 'token_ids', not both")
        for name in required:
            value = getattr(record, name)
            if value is None and name == "text" and record.token_ids is not None:
                continue  # the model's own tokens stand for the text
            if value is None:
                hint = " (or give the model's 'token_ids')" if name == "text" and "token_ids" in used else ""
                raise InvalidInput(f"{where}: field {name!r} is missing{hint}")
            if name == "audio":
                continue
            if not value.strip():
                raise InvalidInput(f"{where}: field {name!r} is empty")
        for name in STRING_FIELDS:
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
        if record.messages and "messages" not in used:
            raise InvalidInput(f"{where}: field 'messages' is not used by this task (chats are for text-generation)")
        for name in ("audio", "sampling_rate"):
            if getattr(record, name) is not None and name not in used:
                raise InvalidInput(f"{where}: field {name!r} is not used by this task")


def unknown_fields(where: str, names: list[str]) -> InvalidInput:
    return InvalidInput(f"{where}: unknown field(s) {names}; known fields: {list(RECORD_FIELDS[1:])}")


def check_no_extra(records: list[Record]) -> None:
    """A bundle without a template takes only the fields its task knows."""
    for index, record in enumerate(records):
        unknown = sorted(k for k in record.extra if k != "id")
        if unknown:
            raise unknown_fields(record_label(index, record.id), unknown)


def plain(value: Any) -> Any:
    """numpy scalars and arrays (a DataFrame's cells) as Python values; NaN as None."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def json_value(where: str, name: str, value: Any) -> Any:
    """An extra field's value, as JSON carries it (str, number, bool, None, lists, dicts)."""
    value = plain(value)
    if isinstance(value, (list, tuple)):
        value = [plain(v) for v in value]
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError):
        raise InvalidInput(
            f"{where}: field {name!r} is not a JSON value (str, number, bool, null, list, object): "
            f"{type(value).__name__}"
        ) from None
