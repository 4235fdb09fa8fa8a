"""What bounds a request, without servers: shapes checked before arithmetic, echoed values and status
messages cut short, the size and token estimates, admission in units of work. Issue 11."""

from __future__ import annotations

import contextlib
import math
import re
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from splitserve.core import codec, limits
from splitserve.core.admission import Admission
from splitserve.core.errors import InvalidInput, Overloaded, record_label, shown
from splitserve.core.status import MAX_DETAILS_CHARS, status_of
from splitserve.core.tensors import check_shape, from_raw


def test_overflowing_shapes_are_refused_before_arithmetic() -> None:
    """Defect 4: np.prod([2**32, 2**32]) wraps to 0 in int64, which matched empty bytes."""
    with pytest.raises(InvalidInput, match=r"shape \[4294967296, 4294967296\] is too large"):
        from_raw("input_ids", "INT64", [2**32, 2**32], b"")
    with pytest.raises(InvalidInput, match=r"0 bytes do not fit shape \[65536, 65536\] of INT64"):
        from_raw("input_ids", "INT64", [2**16, 2**16], b"")
    with pytest.raises(InvalidInput, match="negative dimension"):
        from_raw("x", "INT64", [-1, 0], b"")
    with pytest.raises(InvalidInput, match="9 dimensions; at most 8"):
        check_shape("x", [1] * 9)
    assert check_shape("x", [0, 2**40]) == ((0, 2**40), 0)


@given(st.lists(st.integers(0, 2**62), min_size=0, max_size=9), st.binary(max_size=64))
def test_from_raw_never_fails_unexpectedly(shape: list[int], raw: bytes) -> None:
    try:
        array = from_raw("t", "INT64", shape, raw)
    except InvalidInput:
        return
    assert array.size * 8 == len(raw) and list(array.shape) == shape


def test_echoed_values_are_cut() -> None:
    """Defect 5: a record id or param value was repeated whole in messages."""
    assert shown("x" * 1000) == "'" + "x" * 62 + "…"
    assert len(shown("x" * 1000)) == 64
    assert record_label(3, "a7") == "record 3 (id='a7')"
    assert len(record_label(0, "y" * 10_000)) < 100
    code, message = status_of(InvalidInput("z" * 100_000))
    assert len(message) == MAX_DETAILS_CHARS and message.endswith("…")


def test_non_finite_params_survive_the_wire_for_their_validators() -> None:
    """Defect 3: json_format raised on NaN/Infinity (INTERNAL) before any validator saw them."""
    got = codec.params_from_struct(codec.params_to_struct({"a": math.nan, "b": math.inf, "c": [1, {"d": None}]}))
    assert math.isnan(got["a"]) and got["b"] == math.inf and got["c"] == [1.0, {"d": None}]


def test_size_estimates() -> None:
    shapes = {"last_hidden_state": [-1, -1, 384]}
    assert limits.output_bytes(shapes, 6, 512) == 6 * 512 * 384 * 4
    assert limits.output_bytes({"logits": [-1, 2]}, 10, 512) == 10 * 2 * 4
    assert limits.output_bytes({"generated_ids": [-1, -1]}, 4, 100, new_tokens=32) == 4 * 32 * 8
    with pytest.raises(InvalidInput, match=r"the model outputs would be 100.0 MiB; the limit is 64.0 MiB"):
        limits.check_message("the model outputs", 100 * 2**20, 64 * 2**20)
    inputs = {"input_ids": np.zeros((300, 512), np.int64)}
    with pytest.raises(InvalidInput, match=r"300 rows of 512 tokens \(153600\); the limit is 131072 tokens"):
        limits.check_request_tokens(inputs, limits.MAX_REQUEST_TOKENS)


def test_admission_refuses_what_cannot_make_its_deadline() -> None:
    """Defect 7: admission counts units of work and refuses, at once, what would finish past the
    request's deadline at the rate recent requests were served."""
    gate = Admission(1000, "records", "gateway", "max_in_flight_records")
    with gate.admit(10, None):
        time.sleep(0.05)  # taught: about 10 records in 0.05 s, 200 records/s
    assert gate.rate is not None and 50 < gate.rate < 250
    with gate.admit(100, 5.0):  # 100 in flight: ~0.5 s of work at 200/s
        with pytest.raises(Overloaded) as info:
            gate.check(100, 0.2)
        # Issue 24: the message says the rule (half the time left), not "past the deadline".
        assert re.fullmatch(
            r"gateway is busy: the 100 records ahead and this request's 100 would take about \d+\.\d\ds, and a "
            r"request is admitted only if that is under half of the time left to its deadline \(0\.20s\); retry "
            r"later or with a longer deadline",
            str(info.value),
        ), str(info.value)
        # Issue 25: its own 100 records alone would not make that deadline: refused for itself, not
        # for the load (the gateway lowers its ceiling on load refusals only); one record would.
        assert not info.value.load
        with pytest.raises(Overloaded) as info:
            gate.check(1, 0.2)
        assert info.value.load
        gate.check(100, 30.0)  # a patient request is admitted
        with pytest.raises(Overloaded, match="max_in_flight_records 1000"):
            gate.check(901, 30.0)
    gate.check(5000, 0.001)  # nothing in progress: always admitted (its size is checked elsewhere)


def test_admission_learns_a_slowdown_from_requests_in_flight() -> None:
    """Completions learn a fall in the rate too late under overload: the oldest request in flight
    bounds it (its work is not done after the time it has waited)."""
    gate = Admission(None, "records", "gateway")
    with gate.admit(100, None):
        time.sleep(0.05)  # taught: about 2,000 records/s
    learnt = gate.rate
    assert learnt is not None
    units = int(0.35 * learnt)  # about 0.35 s of work at the learnt rate (whatever this machine's sleep gave)
    with gate.admit(10, 5.0):
        gate.check(units, 1.0)  # inside half of 1 s
        time.sleep(0.3)  # the tier slowed down: 10 records not done in 0.3 s
        assert gate.current_rate() == pytest.approx(learnt / 2)  # lowered, by half at most
        with pytest.raises(Overloaded, match="under half of the time left to its deadline"):
            gate.check(units, 1.0)  # about 0.7 s now: past half of 1 s
    assert gate.current_rate() == gate.rate  # nothing in flight: the learnt rate alone


def test_one_long_request_does_not_make_every_other_look_late() -> None:
    """A request that stays long for other reasons (a long generation, a slow stream reader, a
    small request waiting for companions in the model tier's batch window) lowers the rate by
    half at most: an idle tier keeps admitting what fits its deadline."""
    gateway = Admission(None, "records", "gateway")
    with gateway.admit(400, None):
        time.sleep(0.05)  # taught: about 8,000 records/s
    learnt = gateway.rate
    assert learnt is not None
    with gateway.admit(1, 30.0):  # a stream held open
        time.sleep(0.2)
        assert gateway.current_rate() == pytest.approx(learnt / 2)
        gateway.check(8, 30.0)  # admitted
    model = Admission(None, "tokens", "model tier")
    with model.admit(16384, None):
        time.sleep(0.05)  # taught: about 330k tokens/s
    assert model.rate is not None
    large = int(0.3 * model.rate)  # about 0.3 s of work at the learnt rate
    with model.admit(8, 2.0):  # 8 tokens waiting for companions
        time.sleep(0.01)
        model.check(large, 2.0)  # a large request with 2 s left still fits (0.6 s at half the rate)


def test_refusals_behind_the_door_lower_what_it_admits() -> None:
    """Issue 25: a request the gateway admitted and a tier behind it refused waited behind work
    there; the load it was refused at, less a quarter, becomes the door's ceiling (once per such
    moment), refused at the door with a message that says so, and completions raise it again."""
    gate = Admission(1000, "records", "gateway", "max_in_flight_records")
    with contextlib.ExitStack() as held:
        tickets = [held.enter_context(gate.admit(8, None)) for _ in range(10)]  # 80 records in progress
        gate.refused_behind(tickets[-1])
        assert gate.ceiling == pytest.approx(60)  # three quarters of 80
        gate.refused_behind(tickets[0])  # admitted before the ceiling fell: not lowered again
        assert gate.ceiling == pytest.approx(60)
        with pytest.raises(Overloaded) as info:
            gate.check(8, None)
        assert str(info.value) == (
            "gateway is full: 80 records in progress, 8 more asked, and the tiers behind it refused work at that "
            "load: it admits about 60 records at once for now, more as requests complete; retry later"
        )
    assert gate.admitted == 0
    gate.check(500, None)  # nothing in progress: a request is always admitted
    with gate.admit(8, None) as late:
        gate.refused_behind(late)  # refused alone: the ceiling is one request, never less
    assert gate.ceiling == pytest.approx(8 + 8 * 8 / 8)  # lowered to 8, then raised by its own completion
    for _ in range(200):  # each completion raises it by a request's share (8 * 8 / ceiling)
        with gate.admit(8, None):
            pass
    assert gate.ceiling is not None and 150 < gate.ceiling < 170  # about 8 * sqrt(2 * 200)
    while gate.ceiling is not None:
        with gate.admit(100, None):
            pass
    gate.check(999, None)
