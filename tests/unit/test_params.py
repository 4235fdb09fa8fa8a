"""Params: every task's rows resolve, validate and refuse with messages naming the param; the
generation contract round-trips through the model tier's wire form. No MLflow, no models."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from splitserve import tasks
from splitserve.core import generation as G
from splitserve.core import params as P
from splitserve.core.errors import InvalidInput
from tests.support.configs import config, generation_info


def test_every_task_has_rows_with_known_kinds_and_valid_defaults() -> None:
    for task in tasks.TASKS:
        names = [p.name for p in task.params]
        assert len(names) == len(set(names)), task.name
        for p in task.params:
            assert p.kind in P.KINDS
            if p.default is not None:
                assert p.validate(p.name, p.default) == p.default, (task.name, p.name)


@pytest.mark.parametrize("task", [t.name for t in tasks.TASKS if not t.streams])
def test_resolve_gives_every_param(task: str) -> None:
    generates = any(p.name == "max_new_tokens" for p in tasks.get(task).params)  # speech recognition
    resolved = tasks.get(task).resolve(config(task, generation=generation_info() if generates else None), {})
    assert set(resolved) == {p.name for p in tasks.get(task).params}


@pytest.mark.parametrize(
    ("task", "params", "message"),
    [
        ("token-classification", {"pooling": "mean"}, "unknown param(s) ['pooling'] for task token-classification"),
        ("token-classification", {"aggregation_strategy": "loudest"}, "param 'aggregation_strategy': expected one of"),
        ("feature-extraction", {"max_length": 100000}, "param 'max_length': 100000 exceeds the model's maximum of 512"),
        ("feature-extraction", {"truncation": "yes"}, "param 'truncation': expected true or false"),
        ("question-answering", {"doc_stride": 400}, "param 'doc_stride': 400 is larger than max_seq_len (384)"),
        ("question-answering", {"max_seq_len": 1000}, "param 'max_seq_len': 1000 exceeds the model's maximum of 512"),
        ("fill-mask", {"top_k": 0}, "param 'top_k': expected a positive integer, got 0"),
        ("zero-shot-classification", {"hypothesis_template": "x"}, "param 'hypothesis_template': expected a string"),
    ],
)
def test_bad_params_are_named(task: str, params: dict, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        tasks.get(task).resolve(config(task), params)
    assert message in str(info.value)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize(
    ("task", "name"),
    [("text-classification", "top_k"), ("fill-mask", "top_k"), ("feature-extraction", "max_length"),
     ("text-generation", "temperature"), ("text-generation", "max_new_tokens"), ("text-generation", "top_p"),
     ("text-generation", "length_penalty"), ("question-answering", "doc_stride")],
)  # fmt: skip
def test_nan_and_infinity_are_invalid_not_internal(task: str, name: str, bad: float) -> None:
    info = generation_info() if tasks.get(task).streams else None
    with pytest.raises(InvalidInput, match=f"param '{name}'"):
        tasks.get(task).resolve(config(task, generation=info), {name: bad})


def test_generation_defaults_limits_and_beam_sampling() -> None:
    task = tasks.get("text-generation")
    info = generation_info(defaults={"do_sample": True, "temperature": 0.7, "top_k": 50, "max_new_tokens": 100})
    resolved = task.resolve(config("text-generation", generation=info), {})
    assert resolved["do_sample"] is True and resolved["temperature"] == 0.7 and resolved["top_k"] == 50
    assert resolved["max_new_tokens"] == 40  # the model's default, capped to the bundle's limit
    assert resolved["return_full_text"] is True
    with pytest.raises(InvalidInput, match="exceeds this model's limit of 40"):
        task.resolve(config("text-generation", generation=info), {"max_new_tokens": 41})
    # The param a request sets wins over a conflicting default (no beam sampling).
    assert task.resolve(config("text-generation", generation=info), {"num_beams": 3})["do_sample"] is False
    with pytest.raises(InvalidInput, match="beam sampling"):
        task.resolve(config("text-generation", generation=info), {"num_beams": 3, "do_sample": True})
    with pytest.raises(InvalidInput, match="at most 16"):
        task.resolve(config("text-generation", generation=info), {"num_beams": 17})
    templated = config("text-generation", generation=info, prompt_template="Q: {prompt}")
    assert task.resolve(templated, {})["return_full_text"] is False  # as MLflow serves a templated model


@given(
    max_new_tokens=st.integers(1, 40),
    do_sample=st.booleans(),
    temperature=st.floats(0.01, 5),
    top_k=st.integers(0, 100),
    top_p=st.floats(0.01, 1),
    seed=st.none() | st.integers(0, 2**31),
    stop_ids=st.lists(st.lists(st.integers(0, 1000), min_size=1, max_size=3), max_size=3),
    early_stopping=st.sampled_from([True, False, "never"]),
    no_repeat_ngram_size=st.integers(0, 4),
)
def test_generation_params_round_trip_the_wire(stop_ids, **request) -> None:
    info = generation_info(eos_token_ids=[2, 3], model_settings=G.ModelDecoding(min_length=3, forced_eos_token_id=[2]))
    if request["do_sample"]:
        request["num_beams"] = 1
    p = G.GenerationParams.of(request, stop_ids, info)
    wire = p.to_oip()
    assert all(isinstance(v, (bool, int, float, str)) for v in wire.values())
    assert G.GenerationParams.from_oip(wire, info) == p
    assert p.eos_ids == (2, 3) and p.min_length == 3 and p.forced_eos_token_id == (2,)


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        ({"max_new_tokens": 41}, "'max_new_tokens': 41 is not in [1, 40]"),
        ({"max_new_tokens": 3.0}, "parameter 'max_new_tokens': expected int"),
        ({"do_sample": 1}, "parameter 'do_sample': expected bool"),
        ({"num_beams": 17}, "'num_beams': 17 is not in [1, 16]"),
        ({"stop_ids": "[[1], []]"}, "parameter 'stop_ids'"),
        ({"early_stopping": "sometimes"}, "parameter 'early_stopping'"),
        ({"beams": 2}, "unknown parameter(s) ['beams']"),
        ({"temperature": 0.0}, "temperature"),
    ],
)
def test_model_tier_rechecks_what_an_oip_client_sends(wire: dict, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        G.GenerationParams.from_oip(wire, generation_info())
    assert message in str(info.value)
