"""The protobuf edge: records, params and tensors round-trip, and every task's result kind maps
to its `Result` message and back to what the client returns. No MLflow, no models."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from splitserve import tasks
from splitserve.core import codec
from splitserve.core.errors import InvalidInput
from splitserve.core.records import Record
from splitserve.core.tensors import from_raw, to_raw

texts = st.text(max_size=20)
scores = st.floats(-1e6, 1e6, allow_nan=False)


def test_records_and_params_round_trip() -> None:
    records = [
        Record(id="a", text="x", text_pair="y"),
        Record(id="b", question="q", context="c", candidate_labels=["l"]),
    ]
    assert codec.records_from_pb(codec.records_to_pb(records)) == records
    params = {"top_k": 2, "stop": ["a", "b"], "normalize": True, "pooling": "mean", "nothing": None}
    assert codec.params_from_struct(codec.params_to_struct(params)) == params


@given(hnp.arrays(st.sampled_from([np.int64, np.float32, np.float16, np.int8, np.bool_]), hnp.array_shapes(max_dims=3)))
def test_tensors_round_trip(array: np.ndarray) -> None:
    datatype, shape, raw = to_raw(array)
    np.testing.assert_array_equal(from_raw("t", datatype, shape, raw), array)


def test_tensor_of_wrong_size_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"tensor 'x': 7 bytes do not fit shape \[1, 3\] of INT64"):
        from_raw("x", "INT64", [1, 3], b"\0" * 7)


label = st.fixed_dictionaries({"label": texts, "score": scores})
entity = st.fixed_dictionaries(
    {"entity_group": texts.filter(bool), "score": scores, "word": texts, "start": st.integers(0, 99), "end": st.integers(0, 99)}
) | st.fixed_dictionaries(
    {"entity": texts.filter(bool), "score": scores, "index": st.integers(0, 99), "word": texts, "start": st.integers(0, 99),
     "end": st.integers(0, 99)}
)  # fmt: skip
fill = st.fixed_dictionaries({"score": scores, "token": st.integers(0, 99), "token_str": texts, "sequence": texts})
answer = st.fixed_dictionaries(
    {"answer": texts, "score": scores, "start": st.integers(0, 99), "end": st.integers(0, 99)}
)
VALUES = {
    "labels": st.lists(label, max_size=4),
    "entities": st.lists(entity, max_size=4),
    "embedding": st.lists(st.floats(-10, 10, width=32), min_size=1, max_size=8)
    | st.lists(st.lists(st.floats(-10, 10, width=32), min_size=3, max_size=3), min_size=1, max_size=3),
    "filled_masks": st.lists(fill, min_size=1, max_size=3) | st.lists(st.lists(fill, min_size=1, max_size=2), min_size=2, max_size=3),
    "answers": st.lists(answer, max_size=3),
    "zero_shot": st.fixed_dictionaries({"sequence": texts, "labels": st.lists(texts, max_size=3), "scores": st.lists(scores, max_size=3)}),
    "generated": st.lists(st.fixed_dictionaries({"generated_text": texts, "token_ids": st.lists(st.integers(0, 99), max_size=5)}), min_size=1, max_size=1),
}  # fmt: skip


def round_trip(task, value) -> None:
    message = tasks.result_to_pb(task, "r1", {task.result_kind: value})
    back = tasks.result_from_pb(message)
    assert back["id"] == "r1"
    got = back[task.result_kind]
    if task.result_kind == "entities":  # the client fills in what the pipeline leaves out
        value = [{"start": None, "end": None, **e} for e in value]
    assert _same(got, value), (got, value)


@pytest.mark.parametrize("task", tasks.TASKS, ids=lambda t: t.name)
def test_every_result_kind_round_trips(task) -> None:
    round_trip(task, task.example)
    if task.result_kind in VALUES:  # and any value of the kinds known here
        given(VALUES[task.result_kind])(lambda value: round_trip(task, value))()


def _same(a, b) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return bool(np.isclose(a, b, rtol=1e-6, atol=1e-30)) or float(np.float32(b)) == a
    return a == b
