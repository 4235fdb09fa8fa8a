"""The files of `splitserve predict --input/--output` without a server: records read from each
format, and the prefix a killed run left (a torn last line, a row cut inside a quoted cell) read
back and cut to its whole answers. Issue 21, item 5."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from splitserve.recordfiles import Answer, Output, read


def test_records_from_jsonl_and_csv(tmp_path: Path) -> None:
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"id": 7, "text": "a"}\n\n"just a text"\n[1, 2]\n{"text": "b", "text_pair": "c"}\n')
    items = list(read(jsonl, "jsonl"))
    assert [(i.index, i.id) for i in items] == [(0, "7"), (1, "1"), (2, "2"), (3, "3")]  # a blank line is none
    assert items[0].fields == {"id": "7", "text": "a"} and items[1].fields == {"id": "1", "text": "just a text"}
    assert items[2].fields is None and items[2].error == "line 4 is a JSON list, not an object or a string"
    csv_file = tmp_path / "in.csv"
    csv_file.write_text('id,content,candidate_labels,text_pair\nx,"one, two","[""a"", ""b""]",\ny,three,a; b,p\n')
    rows = [i.fields for i in read(csv_file, "csv")]
    assert rows == [
        {"id": "x", "content": "one, two", "candidate_labels": ["a", "b"]},  # an empty cell: no field
        {"id": "y", "content": "three", "candidate_labels": "a; b", "text_pair": "p"},
    ]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_resume_cuts_a_torn_last_answer(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"out.{fmt}"
    out = Output(path, fmt, resume=False)
    out.open()
    answers = [
        Answer("a", result={"id": "a", "labels": [{"label": "X", "score": 0.5}]}),
        Answer("b\nc", code="INVALID_ARGUMENT", message="record 1 (id='b\\nc'): field 'text' is empty\nsee"),
    ]
    out.write(answers)
    out.close()
    whole = path.read_bytes()
    torn = b'{"id": "d", "lab' if fmt == "jsonl" else b'd,,"INVALID_ARGUMENT: a message\ncut'
    path.write_bytes(whole + torn)

    resumed = Output(path, fmt, resume=True)
    assert resumed.done_ids == ["a", "b\nc"] and resumed.done_failed == 1
    assert path.read_bytes() == whole  # the torn answer cut off
    resumed.open()
    resumed.write([Answer("d", result={"id": "d", "labels": []})])
    resumed.close()
    assert Output(path, fmt, resume=True).done_ids == ["a", "b\nc", "d"]


def test_an_existing_output_needs_resume_and_must_be_an_output(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text('{"id": "a", "labels": []}\n' + json.dumps(["not", "an", "answer"]) + "\n")
    with pytest.raises(SystemExit, match="exists; run again with --resume"):
        Output(path, "jsonl", resume=False)
    with pytest.raises(SystemExit, match="line 2 of .* is not an answer of splitserve predict"):
        Output(path, "jsonl", resume=True)
    other = tmp_path / "other.csv"
    other.write_text("name,score\nx,1\n")
    with pytest.raises(SystemExit, match="not an output of splitserve predict"):
        Output(other, "csv", resume=True)
    (tmp_path / "other.parquet").write_text("name\n")
    with pytest.raises(SystemExit, match="other.parquet is not an output of splitserve predict"):
        Output(tmp_path / "other.parquet", "parquet", resume=True)


def test_counts_are_the_records_read(tmp_path: Path) -> None:
    from splitserve.recordfiles import count

    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"text": "a"}\n\n  \nnot json\n"b"')
    csv_file = tmp_path / "in.csv"
    csv_file.write_text('text\n"a\nb"\n\nc\n')
    for path, fmt in ((jsonl, "jsonl"), (csv_file, "csv")):
        assert count(path, fmt) == len(list(read(path, fmt))) == {"jsonl": 3, "csv": 2}[fmt]


def test_files_that_are_not_what_they_say(tmp_path: Path) -> None:
    """Not UTF-8 on one JSON line: that record's error; a CSV or Parquet file that cannot be read: one line."""
    from splitserve.recordfiles import count

    jsonl = tmp_path / "in.jsonl"
    jsonl.write_bytes(b'{"text": "caf\xe9"}\n{"text": "ok"}\n')
    items = list(read(jsonl, "jsonl"))
    assert items[0].fields is None and "line 1 is not valid JSON" in str(items[0].error)
    assert items[1].fields == {"id": "1", "text": "ok"}
    latin = tmp_path / "in.csv"
    latin.write_bytes(b"text\ncaf\xe9\n")
    with pytest.raises(SystemExit, match=r"in.csv: cannot be read as csv \('utf-8' codec"):
        count(latin, "csv")
    (tmp_path / "in.parquet").write_text("text\n")
    with pytest.raises(SystemExit, match="in.parquet: cannot be read as parquet"):
        count(tmp_path / "in.parquet", "parquet")
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("text\na,b\n")
    assert [i.fields for i in read(ragged, "csv")] == [{"id": "0", "text": "a", "cells_past_the_header": ["b"]}]
