"""token-classification against its oracles: `transformers.pipeline` for every aggregation
strategy (the decoder itself is checked in depth in test_token_classification_decoder.py), the
PyTorch model tier, the bundle's pyfunc, and a model logged by the user's own code."""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
import pytest

from splitserve.client import Client
from tests.support.bundles import ARCHS
from tests.support.oracle import TEXTS, check_parity, close
from tests.support.stack import Stack

TASK = "token-classification"
PARAMS: list[dict[str, Any]] = [
    {},
    {"aggregation_strategy": "simple"},
    {"aggregation_strategy": "first"},
    {"aggregation_strategy": "average"},
    {"aggregation_strategy": "max"},
    {"aggregation_strategy": "simple", "ignore_labels": []},
]


def expected(pipe: Any, text: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"entities": pipe(text, **params)}


def matches(exp: dict[str, Any], got: dict[str, Any], where: str) -> None:
    e, r = exp["entities"], got["entities"]
    assert len(e) == len(r), f"{where}: {len(r)} entities, pipeline {len(e)}:\n{r}\n{e}"
    for a, b in zip(e, r, strict=True):
        for key in a:
            if key == "score":
                assert close(a[key], b[key]), f"{where}: {b} != {a}"
            else:
                assert b[key] == a[key], f"{where}: {key} {b[key]!r} != {a[key]!r} ({b} vs {a})"
        assert set(b) == set(a), f"{where}: keys {sorted(b)} != {sorted(a)}"


@pytest.mark.parametrize("arch", ARCHS)
def test_gateway_and_in_process_match_pipeline(tiny_bundles, arch: str) -> None:
    check_parity(tiny_bundles[(TASK, arch)], TEXTS, PARAMS, expected, matches)


def test_torch_backend_matches_pipeline(tiny_bundles) -> None:
    check_parity(tiny_bundles[(TASK, "roberta")], TEXTS, PARAMS[:3], expected, matches, backend="torch")


def test_pyfunc_predict_equals_gateway(tiny_bundles) -> None:
    """`mlflow.pyfunc.load_model(bundle).predict(df)` equals the gateway, keyed by id."""
    exported = tiny_bundles[(TASK, "roberta")]
    ids = [f"id-{i}" for i in range(len(TEXTS))]
    frame = pd.DataFrame({"id": ids, "content": TEXTS})
    params = {"aggregation_strategy": "simple"}
    scored = mlflow.pyfunc.load_model(exported.bundle_uri).predict(frame, params=params)
    assert list(scored["id"]) == ids
    with Stack(exported.local_dir) as stack, Client(stack.gateway) as client:
        remote = {r["id"]: r for r in client.predict(frame, params=params)}
    for _, row in scored.iterrows():
        matches({"entities": remote[row["id"]]["entities"]}, {"entities": row["entities"]}, row["id"])


def test_components_dict_logged_by_user_code(tiny_bundles, mlflow_store) -> None:
    """A model logged by the user's own code as a components dict exports and serves the same
    as a pipeline."""
    import transformers

    from splitserve.commands.log import source_requirements
    from splitserve.export import export_bundle

    model_dir = tiny_bundles[(TASK, "bert")].model_dir
    components = {
        "model": transformers.AutoModelForTokenClassification.from_pretrained(str(model_dir)),
        "tokenizer": transformers.AutoTokenizer.from_pretrained(str(model_dir)),
    }
    with mlflow.start_run():
        info = mlflow.transformers.log_model(components, name="ner", task=TASK, pip_requirements=source_requirements())
    bundle = export_bundle(info.model_uri, name="user-ner", show_progress=False)
    pipe = transformers.pipeline(TASK, model=str(model_dir), device=-1)
    params = {"aggregation_strategy": "simple"}
    with Stack(bundle) as stack, Client(stack.gateway) as client:
        results = client.predict(TEXTS[:3], params=params)
    for text, result in zip(TEXTS[:3], results, strict=True):
        matches({"entities": pipe(text, **params)}, result, text)
