"""Records: what users pass becomes records, and every task's record checks name the record and
the field. No MLflow, no models."""

from __future__ import annotations

import pytest

from splitserve import tasks
from splitserve.core.errors import InvalidInput
from splitserve.core.records import Limits, Record, check_records, to_records
from splitserve.tasks.base import Assets
from tests.support.configs import config


def test_strings_dicts_and_frames_become_records() -> None:
    import pandas as pd

    assert to_records("a") == [Record(id="0", text="a")]
    assert to_records([{"id": 7, "content": "b"}, "c"]) == [
        Record(id="7", text="b", extra={"id": 7}, text_field="content"),
        Record(id="1", text="c"),
    ]
    frame = pd.DataFrame({"id": ["x", None], "text": ["d", "e"], "candidate_labels": [["p"], "q, r"]})
    assert to_records(frame) == [
        Record(id="x", text="d", candidate_labels=["p"]),
        Record(id="1", text="e", candidate_labels=["q", "r"]),
    ]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (42, "records must be a list of strings or dicts, got int"),
        ([3], "record 0: expected a string or a dict, got int"),
        ([{"id": "a", "text": "x", "content": "y"}], "record 0 (id='a'): give the text once"),
        ([{"id": "a", "txt": "x"}], "record 0 (id='a'): unknown field(s) ['txt']"),
        ([{"id": "n", "content": 42}], "record 0 (id='n'): field 'text' must be a string, got int"),
        ([{"candidate_labels": [1]}], "record 0 (id='0'): field 'candidate_labels' must be a list of strings"),
    ],
)
def test_bad_records_are_named(inputs, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        to_records(inputs)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("task", "records", "message"),
    [
        ("feature-extraction", [], "request has no records"),
        ("feature-extraction", [{"id": "b7"}], "record 0 (id='b7'): field 'text' is missing"),
        ("feature-extraction", ["ok", " "], "record 1 (id='1'): field 'text' is empty"),
        ("feature-extraction", [{"text": "a", "text_pair": "b"}], "field 'text_pair' is not used by this task"),
        ("text-classification", [{"text": "a", "text_pair": "b"}, "c"], "record 1 (id='1'): either every record"),
        ("question-answering", [{"id": "q", "context": "P"}], "record 0 (id='q'): field 'question' is missing"),
        ("question-answering", [{"question": "?", "context": "P", "text": "t"}], "field 'text' is not used"),
        ("zero-shot-classification", ["Paris"], "field 'candidate_labels' is missing or empty, and no param"),
        ("fill-mask", [{"text": "a", "candidate_labels": ["x"]}], "field 'candidate_labels' is not used"),
        ("feature-extraction", ["x" * 11], "record 0 (id='0'): field 'text' has 11 characters; the limit is 10"),
        ("feature-extraction", ["a", "b", "c"], "request has 3 records; the limit is 2"),
        ("feature-extraction", [{"token_ids": [101, True]}], "field 'token_ids' must be a non-empty list of integers"),
        ("feature-extraction", [{"id": "e", "token_ids": []}], "record 0 (id='e'): field 'token_ids' must be"),
        ("text-classification", [{"token_ids": [101, 102]}], "field 'token_ids' is not used by this task"),
        ("feature-extraction", [{"token_ids": [101, 2**64]}], "field 'token_ids' has id 18446744073709551616, outside"),
        ("text-classification", {"token_ids": [101, 7592, 102]}, "record 0 (id='0'): field 'token_ids' is not"),
    ],
)
def test_every_task_checks_its_records(task: str, records, message: str) -> None:
    t = tasks.get(task)
    assets = Assets(config(task), tokenizer=None, limits=Limits(max_records=2, max_text_chars=10))
    with pytest.raises(InvalidInput) as info:
        t.check(assets, to_records(records), t.resolve(assets.config, {}))
    assert message in str(info.value)


def test_fields_every_task_reads_are_record_fields() -> None:
    for task in tasks.TASKS:
        assert set(task.required) <= set(task.fields), task.name
        check_records([Record(id="0", **dict.fromkeys(task.required, "x"))], Limits(), task.required, task.fields)


def test_a_template_imported_by_two_threads_at_once_is_whole_in_both(tmp_path) -> None:
    """Two stages of one process (the inline gateway's, in-process tiers) load the same template in
    two threads: the second got the module half-executed, without its PARAMS ("unknown param(s)")."""
    import threading
    import time

    from splitserve.stages.template import import_module

    (tmp_path / "slow.py").write_text("import time\ntime.sleep(0.4)\nPARAMS = {'threshold': 0.5}\n")
    seen: list[object] = []

    def load() -> None:
        seen.append(getattr(import_module(tmp_path, "slow"), "PARAMS", None))

    first = threading.Thread(target=load)
    first.start()
    time.sleep(0.1)  # the first is inside the module's body
    load()
    first.join()
    assert seen == [{"threshold": 0.5}, {"threshold": 0.5}]
