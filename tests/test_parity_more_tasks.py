"""Parity with the oracle, `transformers.pipeline` on PyTorch, for fill-mask, question answering
(long contexts split into windows with a stride) and zero-shot classification (one model row per
candidate label), on two architectures each: through real gRPC servers of every tier behind the
gateway, and in process (the pyfunc path's stages). Plus their bad-input cases."""

from __future__ import annotations

import grpc
import mlflow.pyfunc
import pandas as pd
import pytest
import transformers
from conftest import ARCHS, MORE_TASKS
from oracle import MORE_PARAMS, QA_RECORDS, ZERO_SHOT_RECORDS, assert_matches, more_inputs, pipeline_output
from stack import Stack

from splitserve.client import Client
from splitserve.core.bundle import load_bundle
from splitserve.core.errors import InvalidInput
from splitserve.core.records import to_records
from splitserve.inprocess import InProcessPipeline
from splitserve.tasks.base import ROW_RECORD

# The QA pipeline itself calls np.array() on torch tensors once per window.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def _pipeline(exported) -> transformers.Pipeline:
    return transformers.pipeline(
        exported.task, model=str(exported.model_dir), tokenizer=str(exported.model_dir), device=-1
    )


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("task", MORE_TASKS)
def test_gateway_and_in_process_match_pipeline(more_bundles, task: str, arch: str) -> None:
    exported = more_bundles[(task, arch)]
    pipe = _pipeline(exported)
    local = InProcessPipeline(load_bundle(exported.local_dir, ("tokenizer", "onnx")))
    items = more_inputs(task, pipe.tokenizer)
    records = [{"id": f"r{i}", **item} for i, item in enumerate(items)]
    with Stack(exported.local_dir) as stack, Client(stack.gateway) as client:
        for params in MORE_PARAMS[task]:
            via_gateway = client.predict(records, params=params)
            in_process = local.predict(records, params=params)
            assert [r["id"] for r in via_gateway] == [r["id"] for r in records]
            assert [r["id"] for r in in_process] == [r["id"] for r in records]
            for item, remote, here in zip(items, via_gateway, in_process, strict=True):
                expected = pipeline_output(task, pipe, item, params)
                where = f"{task}/{arch} params={params} record={str(item)[:50]!r}"
                assert_matches(task, expected, remote, f"gateway {where}")
                assert_matches(task, expected, here, f"in-process {where}")


def test_long_context_is_split_into_windows(more_bundles) -> None:
    """The long QA context makes several model rows, mapped back to their record."""
    exported = more_bundles[("question-answering", "roberta")]
    local = InProcessPipeline(load_bundle(exported.local_dir, ("tokenizer", "onnx")))
    encoded = local.pre.run(to_records(QA_RECORDS))
    rows = encoded.context[ROW_RECORD].tolist()
    assert rows[:4] == [0, 1, 2, 3] and rows.count(4) > 2, rows
    assert encoded.model_inputs["input_ids"].shape[1] <= 64


@pytest.mark.parametrize("arch", ARCHS)
def test_zero_shot_labels_as_param(more_bundles, arch: str) -> None:
    """Labels for every record as a param (a comma-separated string, as the pipeline takes them);
    a record's own labels win."""
    exported = more_bundles[("zero-shot-classification", arch)]
    pipe = _pipeline(exported)
    texts = ["Angela Merkel met Emmanuel Macron in Berlin", "東京タワーに行きました。"]
    params = {"candidate_labels": "politics, travel ,food", "multi_label": True}
    records = [{"id": "a", "text": texts[0]}, {"id": "b", "text": texts[1], "candidate_labels": ["旅行", "sport"]}]
    with Stack(exported.local_dir) as stack, Client(stack.gateway) as client:
        got = client.predict(records, params=params)
    expected = [
        pipe(texts[0], candidate_labels="politics, travel ,food", multi_label=True),
        pipe(texts[1], candidate_labels=["旅行", "sport"], multi_label=True),
    ]
    for e, r in zip(expected, got, strict=True):
        assert_matches("zero-shot-classification", {"zero_shot": e}, r, f"{arch} {r['id']}")


@pytest.mark.parametrize("task", MORE_TASKS)
def test_pyfunc_predict_matches_pipeline(more_bundles, task: str) -> None:
    """`mlflow.pyfunc.load_model(bundle).predict(df)`: MLflow fills in the signature's param
    defaults (lists as []), the DataFrame carries each task's columns."""
    exported = more_bundles[(task, "bert")]
    pipe = _pipeline(exported)
    items = more_inputs(task, pipe.tokenizer)[:4]
    frame = pd.DataFrame([{"id": f"id-{i}", **item} for i, item in enumerate(items)])
    params = MORE_PARAMS[task][1]
    scored = mlflow.pyfunc.load_model(exported.local_dir).predict(frame, params=params)
    assert list(scored["id"]) == list(frame["id"])
    kind = {"fill-mask": "filled_masks", "question-answering": "answers", "zero-shot-classification": "zero_shot"}
    for item, (_, row) in zip(items, scored.iterrows(), strict=True):
        expected = pipeline_output(task, pipe, item, params)
        assert_matches(task, expected, {kind[task]: row[kind[task]]}, f"pyfunc {task} {row['id']}")


def test_batched_requests_of_different_lengths(more_bundles) -> None:
    """Requests batched together by the model tier come back padded to the longest one; QA's
    [rows, tokens] logits are cut back to each request's own windows."""
    import concurrent.futures

    from prometheus_client import REGISTRY

    exported = more_bundles[("question-answering", "roberta")]
    pipe = _pipeline(exported)
    requests = [
        [{"id": "short", **QA_RECORDS[0]}],
        [{"id": "long", **QA_RECORDS[-1]}],
        [{"id": "cjk", **QA_RECORDS[2]}],
    ]
    batches = "splitserve_model_batch_requests_count"
    with (
        Stack(exported.local_dir, model={"max_queue_delay_ms": 300, "max_pad_fraction": 1.0}) as stack,
        Client(stack.gateway) as client,
        concurrent.futures.ThreadPoolExecutor(len(requests)) as pool,
    ):
        single = {"le": "1.0"}
        before = REGISTRY.get_sample_value(batches) or 0.0
        before_single = REGISTRY.get_sample_value("splitserve_model_batch_requests_bucket", single) or 0.0
        results = list(pool.map(lambda records: client.predict(records, params={"top_k": 2}), requests))
        ran = (REGISTRY.get_sample_value(batches) or 0.0) - before
        alone = (REGISTRY.get_sample_value("splitserve_model_batch_requests_bucket", single) or 0.0) - before_single
    assert alone < ran, f"all {ran} inferences ran one request (or row) alone: nothing was batched"
    for records, (result,) in zip(requests, results, strict=True):
        item = {k: v for k, v in records[0].items() if k != "id"}
        expected = pipeline_output("question-answering", pipe, item, {"top_k": 2})
        assert_matches("question-answering", expected, result, f"batched {result['id']}")


@pytest.mark.parametrize("task", MORE_TASKS)
def test_torch_backend_matches_pipeline(more_bundles, task: str) -> None:
    exported = more_bundles[(task, "bert")]
    pipe = _pipeline(exported)
    items = more_inputs(task, pipe.tokenizer)
    params = MORE_PARAMS[task][1]
    with Stack(exported.local_dir, model={"backend": "torch"}) as stack, Client(stack.gateway) as client:
        got = client.predict(items, params=params)
    for item, result in zip(items, got, strict=True):
        assert_matches(task, pipeline_output(task, pipe, item, params), result, f"torch {task} {str(item)[:40]}")


# Bad input: INVALID_ARGUMENT with a message naming the record and the field (or the param);
# the in-process path raises InvalidInput with the same message.
BAD_INPUT = {
    "fill-mask": [
        (
            [{"id": "a", "text": "Paris is a [MASK] city"}, {"id": "b", "text": "[MASK]"}, {"id": "x", "text": "none"}],
            None,
            "record 2 (id='x'): field 'text' has no mask token '[MASK]'",
        ),
        (
            [{"id": "t", "text": "word " * 600 + "[MASK]"}],
            None,
            "record 0 (id='t'): field 'text' has its mask token '[MASK]' past the first 512 tokens",
        ),
        ([{"id": "p", "text": "a [MASK]", "text_pair": "b"}], None, "record 0 (id='p'): field 'text_pair' is not used"),
        ([{"text": "a [MASK]"}], {"targets": 5}, "param 'targets': expected a list of strings, got 5"),
        ([{"text": "a [MASK]"}], {"top_k": 0}, "param 'top_k': expected a positive integer, got 0"),
    ],
    "question-answering": [
        (
            [{"id": "a", **QA_RECORDS[0]}, {"id": "q", "context": "Paris"}],
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
        (QA_RECORDS[:1], {"doc_stride": 400}, "param 'doc_stride': 400 is larger than max_seq_len (384)"),
        (QA_RECORDS[:1], {"max_seq_len": 1000}, "param 'max_seq_len': 1000 exceeds the model's maximum of 512"),
        (QA_RECORDS[:1], {"truncation": True}, "unknown param(s) ['truncation'] for task question-answering"),
    ],
    "zero-shot-classification": [
        (
            [ZERO_SHOT_RECORDS[0], {"id": "z", "text": "Paris"}],
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
            ZERO_SHOT_RECORDS[:1],
            {"hypothesis_template": "no placeholder"},
            "param 'hypothesis_template': expected a string with one {} where the label goes",
        ),
        (
            [{"id": "h", "text": "Paris", "candidate_labels": ["word " * 600]}],
            None,
            "record 0 (id='h'): field 'candidate_labels': the hypothesis for label 'word word",
        ),
    ],
}


@pytest.mark.parametrize("task", MORE_TASKS)
def test_invalid_argument(more_bundles, task: str) -> None:
    exported = more_bundles[(task, "bert")]
    local = InProcessPipeline(load_bundle(exported.local_dir, ("tokenizer", "onnx")))
    good = [{"id": "ok", **more_inputs(task, local.pre.tokenizer)[0]}]
    with Stack(exported.local_dir) as stack, Client(stack.gateway) as client:
        for records, params, details in BAD_INPUT[task]:
            with pytest.raises(grpc.RpcError) as info:
                client.predict(records, params=params)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
            assert details in info.value.details()
            with pytest.raises(InvalidInput) as local_info:
                local.predict(records, params=params)
            assert details in str(local_info.value)
            assert client.predict(good)[0]["id"] == "ok"  # ...and the servers keep serving
