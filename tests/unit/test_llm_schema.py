"""MLflow's llm/v1 request fields as the bundle's generation params (`splitserve.llm_schema`), without
a model: the first row's fields over `params`, max_tokens, temperature 0, stop with and without a
space, the neutral fields, and refusals naming the field."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from splitserve.core.errors import InvalidInput
from splitserve.llm_schema import CHAT, COMPLETIONS, generation_params, read_request


def test_the_first_rows_fields_over_params() -> None:
    frame = pd.DataFrame({"prompt": ["a", "b"], "max_tokens": [6, 30], "temperature": [np.nan, 0.5]})
    inputs, fields = read_request(COMPLETIONS, frame, {"max_tokens": 3, "temperature": 0.9})
    assert inputs == ["a", "b"] and fields == {"max_tokens": 6, "temperature": 0.9}
    inputs, fields = read_request(COMPLETIONS, {"prompt": "a", "stop": np.array(["x"])}, None)
    assert inputs == ["a"] and fields == {"stop": ["x"]}
    chat = [{"role": "user", "content": "hi"}]
    inputs, fields = read_request(CHAT, [{"messages": chat, "top_k": 5}], None)
    assert inputs == [chat] and fields == {"top_k": 5}


def test_fields_as_generation_params() -> None:
    assert generation_params({}) == {}
    assert generation_params({"max_tokens": 8, "temperature": 0.7}) == {"max_new_tokens": 8, "temperature": 0.7}
    assert generation_params({"temperature": 0.0}) == {"do_sample": False}  # greedy
    assert generation_params({"stop": ["\n", "the"]}) == {"stop": ["\n", " \n", "the", " the"]}
    assert generation_params({"stop": "the", "top_p": 0.9, "top_k": 4}) == {
        "stop": ["the", " the"],
        "top_p": 0.9,
        "top_k": 4,
    }
    assert generation_params({"n": 1, "stream": False, "tools": [], "frequency_penalty": 0}) == {}


@pytest.mark.parametrize(
    ("task", "request_", "message"),
    [
        (COMPLETIONS, {"prompt": "a", "top_k": 3}, r"unknown field\(s\) \['top_k'\]"),
        (COMPLETIONS, {"messages": []}, "takes field 'prompt'"),
        (CHAT, "hello", "takes a dict"),
    ],
)
def test_requests_refused(task: str, request_: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        read_request(task, request_, None)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"n": 2}, "field 'n': only 1"),
        ({"stream": True}, "field 'stream': only False"),
        ({"presence_penalty": 0.5}, "field 'presence_penalty'"),
        ({"stop": [""]}, "field 'stop'"),
    ],
)
def test_fields_refused(fields: dict, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        generation_params(fields)
