"""Record files for `splitserve predict --input FILE --output FILE`: records read from JSON lines,
CSV or Parquet (a column is a record field, an `id` column the record's id), and answers written in
input order, one per record, in chunks that each end a line, so that a killed run leaves a valid
prefix that `--resume` continues.

Output, one answer per input record, in input order:
- `.jsonl`: the result as the client returns it (`{"id": ..., "labels": ...}`), or
  `{"id": ..., "error": {"code": "INVALID_ARGUMENT", "message": ...}}`;
- `.csv` and `.parquet`: the columns `id`, `result` (the result as JSON, without its id) and `error`
  (`CODE: message`), one of the last two empty. A Parquet file cannot grow in place: the answers go
  to `OUT.partial` (JSON lines) first, which becomes the Parquet file when every record is in it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
CSV_COLUMNS = ["id", "result", "error"]
# CSV cells are strings: the list-valued record fields are read as JSON, the sampling rate as a number.
CSV_JSON_FIELDS = ("messages", "token_ids", "candidate_labels")
CSV_PAST_HEADER = "cells_past_the_header"  # a row's cells past its header's columns (refused as a field)
FSYNC_EVERY_S = 1.0  # written chunks reach the disk at least this often (and at the end)


@dataclass
class Item:
    """One input record: its position in the file, its id, and its fields (None when the file's own
    line could not be read as a record: `error` says why)."""

    index: int
    id: str
    fields: dict[str, Any] | None
    error: str | None = None


@dataclass
class Answer:
    id: str
    result: dict[str, Any] | None = None
    code: str | None = None  # a failed record: the status code's name and the message
    message: str | None = None


def file_format(path: Path, flag: str) -> str:
    """The format of `path` by its extension; one line naming what is wrong otherwise."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise SystemExit(
            f"error: {flag} {path}: unknown extension {path.suffix or '(none)'!r}; use .jsonl, .csv or .parquet"
        )
    if fmt == "parquet":
        _pyarrow(flag)
    return fmt


def _pyarrow(flag: str) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise SystemExit(
            f"error: {flag}: .parquet files need pyarrow, which is not installed (pip install pyarrow)"
        ) from None
    return pq


def count(path: Path, fmt: str) -> int:
    """How many records `path` holds (for the progress bar's total); one line if it cannot be read
    as its extension says (a CSV file read whole here, so that `read` meets no such surprise)."""
    try:
        if fmt == "parquet":
            return int(_pyarrow("--input").ParquetFile(path).metadata.num_rows)
        if fmt == "csv":
            with path.open(newline="", encoding="utf-8") as f:
                return max(sum(1 for row in csv.reader(f) if row) - 1, 0)  # less the header (blank rows are none)
        with path.open("rb") as f:
            return sum(1 for line in f if line.strip())
    except Exception as exc:  # OSError, UnicodeDecodeError, csv.Error, pyarrow's ArrowInvalid
        raise SystemExit(f"error: --input {path}: cannot be read as {fmt} ({exc})") from None


def read(path: Path, fmt: str) -> Iterator[Item]:
    """The records of `path`, in order, as they are read (a file of any size)."""
    if fmt == "jsonl":
        yield from _read_jsonl(path)
    elif fmt == "csv":
        with path.open(newline="", encoding="utf-8") as f:
            for index, row in enumerate(csv.DictReader(f, restkey=CSV_PAST_HEADER)):
                yield _item(index, {k: _csv_cell(k, v) for k, v in row.items() if v not in ("", None)})
    else:
        index = 0
        for batch in _pyarrow("--input").ParquetFile(path).iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                yield _item(index, {k: v for k, v in row.items() if v is not None})
                index += 1


def _read_jsonl(path: Path) -> Iterator[Item]:
    """Each non-blank line a record: a JSON object of fields, or a JSON string (a text), in UTF-8."""
    with path.open("rb") as f:
        index = 0
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError as exc:
                yield Item(index, str(index), None, f"line {line_no} is not valid JSON ({exc})")
            else:
                if isinstance(value, str):
                    value = {"text": value}
                if isinstance(value, dict):
                    yield _item(index, value)
                else:
                    what = type(value).__name__
                    yield Item(index, str(index), None, f"line {line_no} is a JSON {what}, not an object or a string")
            index += 1


def _item(index: int, fields: dict[str, Any]) -> Item:
    """A record: its `id` column as its id (as a string), else its position."""
    given = fields.get("id")
    record_id = str(index) if given is None else str(given)
    return Item(index, record_id, {**fields, "id": record_id})


def _csv_cell(name: str, value: str) -> Any:
    if name in CSV_JSON_FIELDS and value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except ValueError:
            return value  # the record's own mistake, named by the record checks
    if name == "sampling_rate" and value.strip().isdigit():
        return int(value)
    return value


class Output:
    """The output file, written in input order: `open`, then `write` appends the answers of the next
    records (each chunk ends a line, and reaches the disk within FSYNC_EVERY_S), `finish` ends it.
    `done_ids` and `done_failed` describe what an earlier run had written (with `resume`)."""

    def __init__(self, path: Path, fmt: str, resume: bool):
        self.path, self.fmt = path, fmt
        self.journal = path.with_name(path.name + ".partial") if fmt == "parquet" else path
        exists = [p for p in {path, self.journal} if p.exists()]
        if exists and not resume:
            raise SystemExit(
                f"error: --output {exists[0]} exists; run again with --resume to continue it, or remove it"
            )
        self.done_ids: list[str] = []
        self.done_failed = 0
        if resume and fmt == "parquet" and path.exists():  # finished before: continue from its rows
            self._journal_from_parquet()
        if resume and self.journal.exists():
            self._read_prefix()
        self.file: Any = None
        self.synced = time.monotonic()

    def open(self) -> None:
        """Made (or opened to append to) once the records are about to be scored."""
        self.file = self.journal.open("ab")
        if self.fmt == "csv" and self.file.tell() == 0:
            self.file.write(_csv_line(CSV_COLUMNS))

    def write(self, answers: list[Answer]) -> None:
        lines = [_csv_line(csv_row(a)) if self.fmt == "csv" else jsonl_line(a) for a in answers]
        self.file.write(b"".join(lines))
        self.file.flush()  # in the kernel's hands: a killed process loses none of it
        if time.monotonic() - self.synced >= FSYNC_EVERY_S:
            self.sync()

    def sync(self) -> None:
        os.fsync(self.file.fileno())
        self.synced = time.monotonic()

    def close(self) -> None:
        if self.file is not None and not self.file.closed:
            self.file.flush()
            self.sync()
            self.file.close()

    def finish(self) -> None:
        """Every record is written: close (a Parquet output: written from its journal, then the journal removed)."""
        self.close()
        if self.fmt != "parquet":
            return
        pq = _pyarrow("--output")
        import pyarrow as pa

        rows = [csv_row(_answer_of(json.loads(line))) for line in self.journal.read_bytes().splitlines()]
        columns = {name: [row[i] or None for row in rows] for i, name in enumerate(CSV_COLUMNS)}
        table = pa.table({name: pa.array(values, pa.string()) for name, values in columns.items()})
        tmp = self.path.with_name(self.path.name + ".tmp")
        pq.write_table(table, tmp)
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        tmp.replace(self.path)
        self.journal.unlink()

    def _read_prefix(self) -> None:
        """What an earlier run wrote, up to its last whole line (a torn last line is cut off)."""
        data = self.journal.read_bytes()
        whole = data[: data.rfind(b"\n") + 1]
        if self.fmt == "csv":
            answers, whole = _csv_prefix(self.journal, whole)
        else:
            answers = [_answer_of(_json_line(self.journal, n, line)) for n, line in enumerate(whole.splitlines(), 1)]
        self.done_ids = [a.id for a in answers]
        self.done_failed = sum(a.code is not None for a in answers)
        if len(whole) < len(data):
            with self.journal.open("r+b") as f:
                f.truncate(len(whole))

    def _journal_from_parquet(self) -> None:
        try:
            rows = _pyarrow("--output").read_table(self.path, columns=CSV_COLUMNS).to_pylist()
        except Exception as exc:  # pyarrow's ArrowInvalid: not a Parquet file, or not with these columns
            raise SystemExit(f"error: --resume: {self.path} is not an output of splitserve predict ({exc})") from None
        lines = [jsonl_line(_answer_of_row(row)) for row in rows]
        self.journal.write_bytes(b"".join(lines))


def jsonl_line(answer: Answer) -> bytes:
    if answer.code is not None:
        value: dict[str, Any] = {"id": answer.id, "error": {"code": answer.code, "message": answer.message}}
    else:
        value = {"id": answer.id, **{k: v for k, v in (answer.result or {}).items() if k != "id"}}
    return json.dumps(value, ensure_ascii=False).encode() + b"\n"


def csv_row(answer: Answer) -> list[str]:
    if answer.code is not None:
        return [answer.id, "", f"{answer.code}: {answer.message}"]
    result = {k: v for k, v in (answer.result or {}).items() if k != "id"}
    return [answer.id, json.dumps(result, ensure_ascii=False), ""]


def _csv_line(row: list[str]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(row)
    return buffer.getvalue().encode()


def _csv_prefix(path: Path, whole: bytes) -> tuple[list[Answer], bytes]:
    """The whole rows of an earlier run's CSV, and their bytes: a row is whole when it is written
    back byte for byte (the last one, cut inside a quoted cell, is not)."""
    rows = list(csv.reader(io.StringIO(whole.decode(errors="replace"), newline="")))
    if rows and rows[0] != CSV_COLUMNS:
        raise SystemExit(f"error: --resume: {path} is not an output of splitserve predict (its columns: {rows[0]})")
    kept, whole_rows = 0, 0
    for n, row in enumerate(rows):
        line = _csv_line(row)
        if len(row) != len(CSV_COLUMNS) or not whole.startswith(line, kept):
            if n < len(rows) - 1:
                raise SystemExit(f"error: --resume: row {n} of {path} is not an answer of splitserve predict")
            break
        kept, whole_rows = kept + len(line), n + 1
    answers = [_answer_of_row(dict(zip(CSV_COLUMNS, row, strict=True))) for row in rows[1:whole_rows]]
    return answers, whole[:kept]


def _json_line(path: Path, line_no: int, line: bytes) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError:
        value = None
    if not isinstance(value, dict) or "id" not in value:
        raise SystemExit(f"error: --resume: line {line_no} of {path} is not an answer of splitserve predict")
    return value


def _answer_of(value: dict[str, Any]) -> Answer:
    """An answer from its JSON line."""
    error = value.get("error")
    if isinstance(error, dict) and set(value) == {"id", "error"}:
        return Answer(str(value["id"]), code=str(error.get("code")), message=str(error.get("message")))
    return Answer(str(value["id"]), result=value)


def _answer_of_row(row: dict[str, Any]) -> Answer:
    """An answer from its CSV or Parquet row."""
    if row.get("error"):
        code, _, message = str(row["error"]).partition(": ")
        return Answer(str(row["id"]), code=code, message=message)
    return Answer(str(row["id"]), result=json.loads(row["result"] or "{}"))
