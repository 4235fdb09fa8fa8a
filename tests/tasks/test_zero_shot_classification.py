"""zero-shot-classification against its oracle, `transformers.pipeline`: one model row per
candidate label, labels per record or as a param. Plus its bad-input cases."""

from __future__ import annotations

from typing import Any

import pytest

from splitserve.client import Client
from tests.support.bundles import ARCHS
from tests.support.oracle import LONG_TEXT, check_invalid_argument, check_parity, check_pyfunc, close, pipeline_for
from tests.support.stack import Stack

TASK = "zero-shot-classification"
RECORDS = [
    {"text": "Angela Merkel met Emmanuel Macron in Berlin", "candidate_labels": ["politics", "sports", "travel"]},
    {
        "text": "Élodie vit à Zürich et mange des crêpes",
        "candidate_labels": ["food", "cuisine française", "voyage", "sport"],
    },
    {"text": "東京タワーに行きました。北京欢迎你", "candidate_labels": ["旅行", "travel"]},
    {"text": "I ❤️ Paris 🗼 😀", "candidate_labels": ["love", "hate"]},
    {"text": "Florida has nice beaches", "candidate_labels": ["beach"]},  # one label: entailment vs contradiction
    {"text": LONG_TEXT, "candidate_labels": ["news", "politics", "weather"]},  # truncated, hypothesis kept
]
PARAMS: list[dict[str, Any]] = [{}, {"multi_label": True}, {"hypothesis_template": "Das Thema ist {}."}]


def expected(pipe: Any, item: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    return {"zero_shot": pipe(item["text"], candidate_labels=item["candidate_labels"], **params)}


def matches(exp: dict[str, Any], got: dict[str, Any], where: str) -> None:
    e, r = exp["zero_shot"], got["zero_shot"]
    assert set(r) == set(e), f"{where}: keys {sorted(r)} != {sorted(e)}"
    assert (r["sequence"], r["labels"]) == (e["sequence"], e["labels"]), f"{where}: {r} != {e}"
    assert all(close(a, b) for a, b in zip(e["scores"], r["scores"], strict=True)), f"{where}: {r} != {e}"


@pytest.mark.parametrize("arch", ARCHS)
def test_gateway_and_in_process_match_pipeline(tiny_bundles, arch: str) -> None:
    check_parity(tiny_bundles[(TASK, arch)], RECORDS, PARAMS, expected, matches)


def test_torch_backend_matches_pipeline(tiny_bundles) -> None:
    check_parity(tiny_bundles[(TASK, "bert")], RECORDS, PARAMS[1:2], expected, matches, backend="torch")


def test_pyfunc_predict_matches_pipeline(tiny_bundles) -> None:
    check_pyfunc(tiny_bundles[(TASK, "bert")], RECORDS[:4], PARAMS[1], expected, matches)


@pytest.mark.parametrize("arch", ARCHS)
def test_labels_as_param(tiny_bundles, arch: str) -> None:
    """Labels for every record as a param (a comma-separated string, as the pipeline takes them);
    a record's own labels win."""
    exported = tiny_bundles[(TASK, arch)]
    pipe = pipeline_for(exported)
    texts = ["Angela Merkel met Emmanuel Macron in Berlin", "東京タワーに行きました。"]
    params = {"candidate_labels": "politics, travel ,food", "multi_label": True}
    records = [{"id": "a", "text": texts[0]}, {"id": "b", "text": texts[1], "candidate_labels": ["旅行", "sport"]}]
    with Stack(exported.local_dir) as stack, Client(stack.gateway) as client:
        got = client.predict(records, params=params)
    want = [
        pipe(texts[0], candidate_labels="politics, travel ,food", multi_label=True),
        pipe(texts[1], candidate_labels=["旅行", "sport"], multi_label=True),
    ]
    for e, r in zip(want, got, strict=True):
        matches({"zero_shot": e}, r, f"{arch} {r['id']}")


def test_invalid_argument(tiny_bundles) -> None:
    check_invalid_argument(
        tiny_bundles[(TASK, "bert")],
        {"id": "ok", **RECORDS[0]},
        [
            (
                [RECORDS[0], {"id": "z", "text": "Paris"}],
                None,
                "record 1 (id='z'): field 'candidate_labels' is missing or empty, and no param 'candidate_labels' was given",
            ),
            (
                [{"id": "y", "text": "Paris", "candidate_labels": []}],
                {"candidate_labels": []},
                "record 0 (id='y'): field 'candidate_labels' is missing or empty",
            ),
            ([{"id": "m", "candidate_labels": ["a"]}], None, "record 0 (id='m'): field 'text' is missing"),
            (
                RECORDS[:1],
                {"hypothesis_template": "no placeholder"},
                "param 'hypothesis_template': expected a string with one {} where the label goes",
            ),
            (
                [{"id": "h", "text": "Paris", "candidate_labels": ["word " * 600]}],
                None,
                "record 0 (id='h'): field 'candidate_labels': the hypothesis for label 'word word",
            ),
        ],
    )
