"""table-question-answering against its oracles: `transformers.pipeline("table-question-answering")` on
PyTorch (answer, coordinates, cells, aggregator), and MLflow's pyfunc of the same logged model (the
answer string); a tiny random-weight TAPAS with WTQ-like heads (tests/support/zoo/tables.py). Plus
its bad-input cases and what export refuses."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.bundles import Exported, log_and_export
from tests.support.oracle import check_invalid_argument, check_parity

TASK = "table-question-answering"
CITIES = {
    "City": ["Paris", "Berlin", "Zürich"],
    "Population": ["2100000", "3600000", "420000"],
    "Country": ["France", "Germany", "Switzerland"],
}
PRICES = {"Item": ["apple", "pear", "plum", "fig"], "Price": ["1.5", "2", "30", "4"], "Count": ["3", "10", "7", "1"]}
ONE_ROW = {"Name": ["Ann"], "Age": ["41"]}
# Longer than the model's 512 tokens: the pipeline (and splitserve) drop rows to fit.
LONG = {"Id": [str(i) for i in range(150)], "Word": [f"word{i} and more" for i in range(150)]}
QUERIES = ["How many people live in Paris?", "What is the total?", "What costs the most?", "How old is Ann?"]
RECORDS: list[dict[str, Any]] = [
    *({"query": q, "table": json.dumps(CITIES)} for q in QUERIES[:3]),
    *({"query": q, "table": json.dumps(PRICES)} for q in QUERIES[1:3]),
    {"query": QUERIES[3], "table": json.dumps(ONE_ROW, ensure_ascii=False)},
    {"query": "Which word has id 3?", "table": json.dumps(LONG)},
    {"query": "What is the average price?", "table": PRICES},  # a dict of columns on the typed API
]


@pytest.fixture(scope="module")
def tapas(mlflow_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    from tests.support.zoo.tables import save_tiny_tapas

    model_dir = save_tiny_tapas(tmp_path_factory.mktemp("tapas"))
    return log_and_export(TASK, "tapas", model_dir, name="tiny-tapas")


def table_of(item: dict[str, Any]) -> dict[str, list[str]]:
    return item["table"] if isinstance(item["table"], dict) else json.loads(item["table"])


def expected(pipe: Any, item: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    answer = pipe(table=table_of(item), query=item["query"], **params)
    return {"table_answer": {**answer, "coordinates": [list(c) for c in answer["coordinates"]]}}


def matches(exp: dict[str, Any], got: dict[str, Any], where: str) -> None:
    assert got["table_answer"] == exp["table_answer"], f"{where}: {got['table_answer']} != {exp['table_answer']}"


def test_gateway_and_in_process_match_pipeline(tapas: Exported) -> None:
    """Aggregators and cells chosen as the pipeline chooses them, on a numeric column and a table
    cut to fit, through every tier and in process."""
    from tests.support.oracle import pipeline_for

    pipe = pipeline_for(tapas)
    answers = [expected(pipe, r, {})["table_answer"] for r in RECORDS]
    assert len({a.get("aggregator") for a in answers}) >= 2, answers  # the model does choose among aggregators
    assert any(a["cells"] for a in answers), answers
    check_parity(tapas, RECORDS, [{}], expected, matches)


def test_sqa_like_model_without_aggregation_head(mlflow_store: Path, tmp_path: Path) -> None:
    """A TAPAS without an aggregation head (SQA-style) in the batch mode: no aggregator, as the pipeline."""
    from tests.support.zoo.tables import save_tiny_tapas

    model_dir = save_tiny_tapas(tmp_path, seed=2, num_aggregation_labels=0, aggregation_labels=None)
    sqa = log_and_export(TASK, "tapas", model_dir, name="tiny-tapas-sqa")
    check_parity(sqa, RECORDS[:1] + RECORDS[3:4] + RECORDS[5:6], [{}], expected, matches)


def test_torch_backend_matches_pipeline(tapas: Exported) -> None:
    check_parity(tapas, RECORDS[:3], [{}], expected, matches, backend="torch")


def test_inline_gateway_and_rest_answer_as_grpc(tapas: Exported) -> None:
    """The inline gateway answers as the pipeline; its REST door what gRPC answers (a table as an
    object or as a JSON string), and a bad table there is a 400 naming the field."""
    import requests

    from splitserve.client import Client
    from tests.support.oracle import pipeline_for
    from tests.support.stack import Stack

    pipe = pipeline_for(tapas)
    records = [{"id": f"i{i}", **r} for i, r in enumerate(RECORDS[2:7])]
    inline = {"inline_stages": tapas.local_dir, "preprocess": [], "postprocess": []}
    with Stack(tapas.local_dir, gateway={**inline, "rest_port": 0}) as stack, Client(stack.gateway) as client:
        got = client.predict(records, params={"truncation": True})
        body = {"records": records, "params": {"truncation": True}}
        response = requests.post(f"{stack.rest}/v1/predict", json=body, timeout=60)
        assert response.status_code == 200, response.text
        assert response.json()["results"] == got
        bad = {"records": [{"id": "b", "query": "Who?", "table": {"City": ["Paris"], "Age": []}}]}
        response = requests.post(f"{stack.rest}/v1/predict", json=bad, timeout=60)
        assert response.status_code == 400, response.text
        assert (
            "record 0 (id='b'): field 'table' has columns of different lengths" in response.json()["error"]["message"]
        )
    for record, result in zip(RECORDS[2:7], got, strict=True):
        matches(expected(pipe, record, {"truncation": True}), result, "inline gateway")


def test_pyfunc_answers_as_mlflow_pyfunc_of_the_source(tapas: Exported) -> None:
    """MLflow's pyfunc answers the answer strings (stripped); the bundle's answers the same, row for
    row: one table with several queries (how MLflow's pyfunc takes a DataFrame) and each table alone."""
    import mlflow.pyfunc
    import pandas as pd

    source = mlflow.pyfunc.load_model(tapas.source_uri)
    bundle = mlflow.pyfunc.load_model(tapas.local_dir)
    frames = [pd.DataFrame([{"query": q, "table": json.dumps(CITIES)} for q in QUERIES[:3]])]
    frames += [pd.DataFrame([r]) for r in RECORDS[3:7]]
    for frame in frames:
        want = list(source.predict(frame))
        got = bundle.predict(frame)
        assert list(got["table_answer"]) == want, f"{frame.to_dict('records')}: {list(got['table_answer'])} != {want}"


def test_invalid_argument(tapas: Exported) -> None:
    good = {"id": "ok", **RECORDS[0]}
    check_invalid_argument(
        tapas,
        good,
        [
            (
                [good, {"id": "j", "query": "Who?", "table": "{'City': ['Paris']}"}],
                None,
                "record 1 (id='j'): field 'table' is not JSON",
            ),
            (
                [{"id": "r", "query": "Who?", "table": json.dumps({"City": ["Paris", "Berlin"], "Age": ["1"]})}],
                None,
                "record 0 (id='r'): field 'table' has columns of different lengths: {'City': 2, 'Age': 1}",
            ),
            (
                [{"id": "n", "query": "Who?", "table": json.dumps({"Age": ["1", 2]})}],
                None,
                "record 0 (id='n'): field 'table': column 'Age' cell 1 must be a string, got int",
            ),
            (
                [{"id": "l", "query": "Who?", "table": json.dumps(["Paris"])}],
                None,
                "record 0 (id='l'): field 'table' must be a JSON object of columns",
            ),
            ([{"id": "q", "table": json.dumps(CITIES)}], None, "record 0 (id='q'): field 'query' is missing"),
            ([{"id": "t", "query": "Who?"}], None, "record 0 (id='t'): field 'table' is missing"),
            ([{"id": "e", "query": "Who?", "table": "{}"}], None, "record 0 (id='e'): field 'table' is empty"),
            (
                [{"id": "x", "query": "Who?", "table": json.dumps(LONG)}],
                {"truncation": False},
                "record 0 (id='x'): field 'table' is",
            ),
            (RECORDS[:1], {"sequential": True}, "param 'sequential': the pipeline's sequential mode"),
            ([{"id": "c", "text": "Who?"}], None, "record 0 (id='c'): field 'query' is missing"),
        ],
    )


def test_export_refuses_the_sequential_mode() -> None:
    """A source whose MLflow model_config asks for the pipeline's sequential (SQA) mode is refused at
    export, in one line naming the param."""
    from splitserve import tasks
    from splitserve.core.errors import ExportError
    from splitserve.export.source import SourceSettings, inference_defaults

    source = SourceSettings(task=TASK, model_config={"sequential": True}, signature_defaults={}, prompt_template=None)
    with pytest.raises(ExportError, match="model_config sets param 'sequential': the pipeline's sequential mode"):
        inference_defaults(source, tasks.get(TASK))


def test_export_refuses_models_other_than_tapas() -> None:
    """The pipeline also runs sequence-to-sequence table models (TAPEX, generating the answer):
    export refuses them in one line naming the model's class; and a TAPAS without column selection."""
    import transformers

    from splitserve.core.errors import ExportError
    from splitserve.export.table import _check_model

    bart = transformers.BartForConditionalGeneration(
        transformers.BartConfig(
            vocab_size=50,
            d_model=8,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=1,
            decoder_attention_heads=1,
            encoder_ffn_dim=8,
            decoder_ffn_dim=8,
        )  # fmt: skip
    )
    with pytest.raises(ExportError, match="only TAPAS models .* got BartForConditionalGeneration"):
        _check_model(bart, None)
    # ...and a TAPAS that transformers itself cannot run at inference (no column selection).
    from tests.support.zoo.tables import tapas_tokenizer, tiny_tapas

    tok = tapas_tokenizer()
    with pytest.raises(ExportError, match="select_one_column=false is not supported"):
        _check_model(tiny_tapas(tok, select_one_column=False), tok)


def test_model_tier_refuses_token_types_outside_their_tables(tapas: Exported) -> None:
    """The model tier checks each of TAPAS's 7 token types against its own embedding table."""
    from model_svc.backends import check_inputs
    from splitserve.core.bundle import load_bundle
    from splitserve.core.errors import InvalidInput

    config = load_bundle(tapas.local_dir, ()).config
    inputs = {n: np.zeros((1, 4), np.int64) for n in ("input_ids", "attention_mask", "position_ids")}
    inputs["token_type_ids"] = np.zeros((1, 4, 7), np.int64)
    inputs["token_type_ids"][0, 2, 3] = 2  # prev_labels: 2 values
    with pytest.raises(
        InvalidInput, match=r"input 'token_type_ids': row 0, position 2, column 3 holds 2; values must be in \[0, 2\)"
    ):
        check_inputs(inputs, config, max_batch_size=4)
    inputs["token_type_ids"][0, 2, 3] = 1
    inputs["position_ids"][0, 1] = 512
    with pytest.raises(
        InvalidInput, match=r"input 'position_ids': row 0, position 1 holds 512; values must be in \[0, 512\)"
    ):
        check_inputs(inputs, config, max_batch_size=4)


async def test_model_tier_batches_requests_with_three_dimensional_token_types() -> None:
    """Two requests of different lengths join one batch: TAPAS's [rows, tokens, 7] token types are
    padded with zeros like the other inputs, and each request gets its own rows back."""
    from model_svc.batching import Batcher

    calls: list[tuple[int, ...]] = []

    def infer(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(inputs["token_type_ids"].shape)
        return {"token_logits": inputs["token_type_ids"].sum(axis=2).astype(np.float32)}

    def request(tag: int, length: int) -> dict[str, np.ndarray]:
        types = np.arange(length * 7).reshape(1, length, 7) + tag
        return {"input_ids": np.ones((1, length), np.int64), "token_type_ids": types.astype(np.int64)}

    batcher = Batcher(infer, token_outputs=("token_logits",), max_batch_size=8, max_batch_tokens=4096,
                      max_queue_delay_ms=50.0, max_queue_size=64, max_pad_fraction=1.0)  # fmt: skip
    batcher.start()
    try:
        short, long = request(1, 3), request(2, 6)
        got_short, got_long = await asyncio.gather(batcher.submit(short), batcher.submit(long))
    finally:
        await batcher.close()
    assert calls == [(2, 6, 7)]
    np.testing.assert_array_equal(got_short.outputs["token_logits"], short["token_type_ids"].sum(axis=2))
    np.testing.assert_array_equal(got_long.outputs["token_logits"], long["token_type_ids"].sum(axis=2))
