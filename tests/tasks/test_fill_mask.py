"""fill-mask against its oracle, `transformers.pipeline`: one mask gives a list of candidates,
several a list per mask; `targets` in the vocabulary or not. Plus its bad-input cases."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.bundles import ARCHS
from tests.support.oracle import check_invalid_argument, check_parity, check_pyfunc, close, pipeline_for

TASK = "fill-mask"
# "{mask}" is replaced by the tokenizer's mask token.
TEMPLATES = [
    "Abraham Lincoln cut down a {mask} tree",
    "Élodie vit à {mask} et mange des crêpes",
    "東京{mask}に行きました。北京欢迎你",
    "I ❤️ {mask} 🗼 😀",
    "multiple    spaces   and\t{mask}\nnewlines",
    "Angela {mask} met Emmanuel Macron in {mask}.",  # two masks: a list per mask
    "{mask}",
]
PARAMS: list[dict[str, Any]] = [
    {},
    {"top_k": 2},
    # In the vocabulary or not (then its first token, as the pipeline does); fewer than top_k.
    {"targets": ["paris", "Berlin", " tree", "🗼", "crêpes"], "top_k": 10},
]


def inputs(mask_token: str) -> list[dict[str, Any]]:
    return [{"text": t.replace("{mask}", mask_token)} for t in TEMPLATES]


def expected(pipe: Any, item: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    return {"filled_masks": pipe(item["text"], **params)}


def matches(exp: dict[str, Any], got: dict[str, Any], where: str) -> None:
    e, r = exp["filled_masks"], got["filled_masks"]
    # One mask: a flat list of candidates; several: a list per mask (the pipeline's shapes).
    assert isinstance(r[0], dict) == isinstance(e[0], dict), f"{where}: shape {r} != pipeline {e}"
    for e_mask, r_mask in zip(*(([x] if isinstance(x[0], dict) else x) for x in (e, r)), strict=True):
        assert len(r_mask) == len(e_mask), f"{where}: {r_mask} != {e_mask}"
        for a, b in zip(e_mask, r_mask, strict=True):
            assert set(b) == set(a), f"{where}: keys {sorted(b)} != {sorted(a)}"
            assert (b["token"], b["token_str"], b["sequence"]) == (a["token"], a["token_str"], a["sequence"]), (
                f"{where}: {b} != {a}"
            )
            assert close(a["score"], b["score"]), f"{where}: {b} != {a}"


@pytest.mark.parametrize("arch", ARCHS)
def test_gateway_and_in_process_match_pipeline(tiny_bundles, arch: str) -> None:
    exported = tiny_bundles[(TASK, arch)]
    check_parity(exported, inputs(pipeline_for(exported).tokenizer.mask_token), PARAMS, expected, matches)


def test_torch_backend_matches_pipeline(tiny_bundles) -> None:
    exported = tiny_bundles[(TASK, "bert")]
    items = inputs(pipeline_for(exported).tokenizer.mask_token)
    check_parity(exported, items, PARAMS[1:2], expected, matches, backend="torch")


def test_pyfunc_predict_matches_pipeline(tiny_bundles) -> None:
    exported = tiny_bundles[(TASK, "bert")]
    check_pyfunc(exported, inputs(pipeline_for(exported).tokenizer.mask_token)[:4], PARAMS[1], expected, matches)


def test_invalid_argument(tiny_bundles) -> None:
    check_invalid_argument(
        tiny_bundles[(TASK, "bert")],
        {"id": "ok", "text": "Paris is the [MASK] of France."},
        [
            (
                [
                    {"id": "a", "text": "Paris is a [MASK] city"},
                    {"id": "b", "text": "[MASK]"},
                    {"id": "x", "text": "none"},
                ],
                None,
                "record 2 (id='x'): field 'text' has no mask token '[MASK]'",
            ),
            (
                [{"id": "t", "text": "word " * 600 + "[MASK]"}],
                None,
                "record 0 (id='t'): field 'text' has its mask token '[MASK]' past the first 512 tokens",
            ),
            (
                [{"id": "p", "text": "a [MASK]", "text_pair": "b"}],
                None,
                "record 0 (id='p'): field 'text_pair' is not used",
            ),
            ([{"text": "a [MASK]"}], {"targets": 5}, "param 'targets': expected a list of strings, got 5"),
            ([{"text": "a [MASK]"}], {"top_k": 0}, "param 'top_k': expected a positive integer, got 0"),
        ],
    )
