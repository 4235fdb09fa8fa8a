"""question-answering against its oracle: long contexts split into windows with a stride, the
answers of all windows merged. transformers 5 removed the question-answering pipeline (and MLflow
can no longer log or serve such a model): the models are tiny ones logged under transformers 4.57
(tests/data) and the oracle is what the 4.57 pipeline answered. Plus its bad-input cases."""

from __future__ import annotations

import concurrent.futures
from typing import Any

import pytest

from splitserve.client import Client
from splitserve.core.bundle import load_bundle
from splitserve.core.records import to_records
from splitserve.inprocess import InProcessPipeline
from splitserve.tasks.base import ROW_RECORD
from tests.support.bundles import ARCHS
from tests.support.oracle import LONG_TEXT, check_invalid_argument, check_parity, check_pyfunc, close, pipeline_for
from tests.support.stack import Stack

TASK = "question-answering"
RECORDS = [
    {"question": "Who works for NASA?", "context": "Angela Merkel works for NASA in Paris."},
    {"question": "Où vit Élodie ?", "context": "Élodie vit à Zürich et mange des crêpes à São Paulo."},
    {"question": "東京タワーはどこ？", "context": "東京タワーに行きました。北京欢迎你 😀"},
    {"question": "What do I love?", "context": "I ❤️ Paris 🗼 😀 and naïve café crème, multiple    spaces."},
    # Longer than every model's max length (BERT 384 by default, RoBERTa 64): windows with stride.
    {"question": "Where did they fly to?", "context": LONG_TEXT},
]
PARAMS: list[dict[str, Any]] = [
    {},
    {"top_k": 3},
    {"top_k": 2, "max_answer_len": 4, "handle_impossible_answer": True},
    {"max_seq_len": 48, "doc_stride": 16, "top_k": 2, "max_question_len": 32},
    {"align_to_words": False, "top_k": 2},
]


def expected(pipe: Any, item: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    answers = pipe(question=item["question"], context=item["context"], **params)
    return {"answers": answers if isinstance(answers, list) else [answers]}


def matches(exp: dict[str, Any], got: dict[str, Any], where: str) -> None:
    e, r = exp["answers"], got["answers"]
    assert len(r) == len(e), f"{where}: {r} != {e}"
    for a, b in zip(e, r, strict=True):
        assert set(b) == set(a), f"{where}: keys {sorted(b)} != {sorted(a)}"
        assert (b["answer"], b["start"], b["end"]) == (a["answer"], a["start"], a["end"]), f"{where}: {r} != {e}"
        assert close(a["score"], b["score"]), f"{where}: {r} != {e}"


@pytest.mark.parametrize("arch", ARCHS)
def test_gateway_and_in_process_match_pipeline(tiny_bundles, arch: str) -> None:
    check_parity(tiny_bundles[(TASK, arch)], RECORDS, PARAMS, expected, matches)


def test_torch_backend_matches_pipeline(tiny_bundles) -> None:
    check_parity(tiny_bundles[(TASK, "bert")], RECORDS, PARAMS[1:2], expected, matches, backend="torch")


def test_pyfunc_predict_matches_pipeline(tiny_bundles) -> None:
    check_pyfunc(tiny_bundles[(TASK, "bert")], RECORDS[:4], PARAMS[1], expected, matches)


def test_long_context_is_split_into_windows(tiny_bundles) -> None:
    """The long context makes several model rows, mapped back to their record."""
    local = InProcessPipeline(load_bundle(tiny_bundles[(TASK, "roberta")].local_dir, ("tokenizer", "onnx")))
    encoded = local.pre.run(to_records(RECORDS))
    rows = encoded.context[ROW_RECORD].tolist()
    assert rows[:4] == [0, 1, 2, 3] and rows.count(4) > 2, rows
    assert encoded.model_inputs["input_ids"].shape[1] <= 64


def test_batched_requests_of_different_lengths(tiny_bundles) -> None:
    """Requests batched together by the model tier come back padded to the longest one; QA's
    [rows, tokens] logits are cut back to each request's own windows."""
    from prometheus_client import REGISTRY

    exported = tiny_bundles[(TASK, "roberta")]
    pipe = pipeline_for(exported)
    requests = [[{"id": "short", **RECORDS[0]}], [{"id": "long", **RECORDS[-1]}], [{"id": "cjk", **RECORDS[2]}]]
    batches = "splitserve_model_batch_requests_count"
    with (
        Stack(exported.local_dir, model={"max_queue_delay_ms": 300, "max_pad_fraction": 1.0}) as stack,
        Client(stack.gateway) as client,
        concurrent.futures.ThreadPoolExecutor(len(requests)) as pool,
    ):
        single = {"le": "1.0"}
        before = REGISTRY.get_sample_value(batches) or 0.0
        before_single = REGISTRY.get_sample_value("splitserve_model_batch_requests_bucket", single) or 0.0
        results = list(pool.map(lambda records: client.predict(records, params=PARAMS[1]), requests))
        ran = (REGISTRY.get_sample_value(batches) or 0.0) - before
        alone = (REGISTRY.get_sample_value("splitserve_model_batch_requests_bucket", single) or 0.0) - before_single
    assert alone < ran, f"all {ran} inferences ran one request (or row) alone: nothing was batched"
    for records, (result,) in zip(requests, results, strict=True):
        item = {k: v for k, v in records[0].items() if k != "id"}
        matches(expected(pipe, item, PARAMS[1]), result, f"batched {result['id']}")


def test_invalid_argument(tiny_bundles) -> None:
    check_invalid_argument(
        tiny_bundles[(TASK, "bert")],
        {"id": "ok", **RECORDS[0]},
        [
            (
                [{"id": "a", **RECORDS[0]}, {"id": "q", "context": "Paris"}],
                None,
                "record 1 (id='q'): field 'question' is missing",
            ),
            ([{"id": "c", "question": "Who?"}], None, "record 0 (id='c'): field 'context' is missing"),
            ([{"id": "e", "question": "Who?", "context": "  "}], None, "record 0 (id='e'): field 'context' is empty"),
            ([{"id": "t", "text": "Who?", "context": "Paris"}], None, "record 0 (id='t'): field 'question' is missing"),
            (
                [{"id": "l", "question": "why " * 400, "context": "Paris"}],
                None,
                "record 0 (id='l'): field 'question' leaves no room for the context in windows of max_seq_len=384",
            ),
            (RECORDS[:1], {"doc_stride": 400}, "param 'doc_stride': 400 is larger than max_seq_len (384)"),
            (RECORDS[:1], {"max_seq_len": 1000}, "param 'max_seq_len': 1000 exceeds the model's maximum of 384"),
            (RECORDS[:1], {"truncation": True}, "unknown param(s) ['truncation'] for task question-answering"),
        ],
    )
