"""text-classification (and text pairs) against its oracle, `transformers.pipeline`."""

from __future__ import annotations

from typing import Any

import pytest

from splitserve.client import Client
from tests.support.bundles import ARCHS
from tests.support.oracle import TEXTS, check_parity, close, pipeline_for
from tests.support.stack import Stack

TASK = "text-classification"
PARAMS: list[dict[str, Any]] = [{}, {"top_k": None}, {"top_k": 2, "function_to_apply": "sigmoid"}]


def expected(pipe: Any, text: Any, params: dict[str, Any]) -> dict[str, Any]:
    return {"labels": pipe(text, truncation=True, **({"top_k": 1} | params))}


def matches(exp: dict[str, Any], got: dict[str, Any], where: str) -> None:
    e, r = exp["labels"], got["labels"]
    assert [d["label"] for d in r] == [d["label"] for d in e], f"{where}: {r} != {e}"
    assert all(close(a["score"], b["score"]) for a, b in zip(e, r, strict=True)), f"{where}: {r} != {e}"


@pytest.mark.parametrize("arch", ARCHS)
def test_gateway_and_in_process_match_pipeline(tiny_bundles, arch: str) -> None:
    check_parity(tiny_bundles[(TASK, arch)], TEXTS, PARAMS, expected, matches)


@pytest.mark.parametrize("arch", ARCHS)
def test_text_pairs_match_pipeline(tiny_bundles, arch: str) -> None:
    exported = tiny_bundles[(TASK, arch)]
    pipe = pipeline_for(exported)
    pairs = [("Florida has nice beaches", "Ça fait plaisir 😀"), ("東京", "multiple    spaces")]
    with Stack(exported.local_dir) as stack, Client(stack.gateway) as client:
        got = client.predict([{"text": a, "text_pair": b} for a, b in pairs], params={"top_k": None})
    for (a, b), result in zip(pairs, got, strict=True):
        matches({"labels": pipe({"text": a, "text_pair": b}, top_k=None)}, result, f"pair {a!r}/{b!r}")
