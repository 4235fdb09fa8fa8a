"""The CLI's log/export contract (URI as the last stdout line), and the bundle as an MLflow
pyfunc model: `mlflow.pyfunc.load_model(uri).predict(df)` equals the gateway, keyed by id."""

from __future__ import annotations

import os
import subprocess
import sys

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from oracle import TEXTS, assert_matches
from stack import Stack

from splitserve.client import Client
from splitserve.core.errors import InvalidInput


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "splitserve", *args], capture_output=True, text=True, env=os.environ.copy()
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_cli_log_and_export_print_uris(mlflow_store, tiny_bundles) -> None:
    model_dir = tiny_bundles[("text-classification", "roberta")].model_dir
    logged = run_cli("log", "--model-dir", str(model_dir), "--task", "text-classification", "--name", "cli-src")
    source = logged.stdout.strip().splitlines()[-1]
    assert source.startswith("models:/cli-src/")
    exported = run_cli("export", source, "--register", "cli-bundle", "--no-progress")
    bundle = exported.stdout.strip().splitlines()[-1]
    assert bundle.startswith("models:/cli-bundle/")

    client = mlflow.MlflowClient()
    run = client.get_run(client.get_model_version("cli-bundle", bundle.rsplit("/", 1)[-1]).run_id)
    assert run.data.metrics["parity_max_abs_diff"] <= 1e-4
    assert run.data.params["task"] == "text-classification"

    # The registered bundle serves by name and by alias.
    client.set_registered_model_alias("cli-bundle", "champion", bundle.rsplit("/", 1)[-1])
    with Stack("models:/cli-bundle@champion") as stack, Client(stack.gateway) as c:
        assert c.info()["model"] == "cli-bundle"
        assert c.predict(["Florida has nice beaches"])[0]["labels"][0]["label"] in {"NEGATIVE", "NEUTRAL", "POSITIVE"}


def test_export_refuses_unsupported_task(mlflow_store, tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "splitserve", "log", "--model-dir", str(tmp_path), "--task", "table-question-answering"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "task 'table-question-answering' is not supported" in proc.stderr


@pytest.mark.parametrize("task", ["feature-extraction", "token-classification"])
def test_pyfunc_predict_equals_gateway(tiny_bundles, task: str) -> None:
    exported = tiny_bundles[(task, "roberta")]
    ids = [f"id-{i}" for i in range(len(TEXTS))]
    frame = pd.DataFrame({"id": ids, "content": TEXTS})
    params = (
        {"pooling": "mean", "normalize": True} if task == "feature-extraction" else {"aggregation_strategy": "simple"}
    )
    model = mlflow.pyfunc.load_model(exported.bundle_uri)
    scored = model.predict(frame, params=params)
    assert list(scored["id"]) == ids
    with Stack(exported.local_dir) as stack, Client(stack.gateway) as client:
        remote = {r["id"]: r for r in client.predict(frame, params=params)}
    kind = "embedding" if task == "feature-extraction" else "entities"
    for _, row in scored.iterrows():
        expected = remote[row["id"]]
        if kind == "embedding":
            np.testing.assert_allclose(np.asarray(row[kind]), np.asarray(expected[kind]), atol=1e-6)
        else:
            assert_matches(task, {kind: expected[kind]}, {kind: row[kind]}, row["id"])


def test_pyfunc_rejects_bad_records(tiny_bundles) -> None:
    model = mlflow.pyfunc.load_model(tiny_bundles[("feature-extraction", "bert")].local_dir)
    with pytest.raises(InvalidInput, match=r"record 1 \(id='b'\): field 'text' is empty"):
        model.predict(pd.DataFrame({"id": ["a", "b"], "content": ["fine", ""]}))


def test_components_dict_logged_by_user_code(tiny_bundles, mlflow_store) -> None:
    """A model logged by the user's own code as a components dict exports and serves the same
    as a pipeline."""
    import transformers

    from splitserve.export import export_bundle
    from splitserve.source import source_requirements

    model_dir = tiny_bundles[("token-classification", "bert")].model_dir
    components = {
        "model": transformers.AutoModelForTokenClassification.from_pretrained(str(model_dir)),
        "tokenizer": transformers.AutoTokenizer.from_pretrained(str(model_dir)),
    }
    with mlflow.start_run():
        info = mlflow.transformers.log_model(
            components, name="ner", task="token-classification", pip_requirements=source_requirements()
        )
    bundle = export_bundle(info.model_uri, name="user-ner", show_progress=False)
    pipe = transformers.pipeline("token-classification", model=str(model_dir), device=-1)
    params = {"aggregation_strategy": "simple"}
    with Stack(bundle) as stack, Client(stack.gateway) as client:
        results = client.predict(TEXTS[:3], params=params)
    for text, result in zip(TEXTS[:3], results, strict=True):
        assert_matches("token-classification", {"entities": pipe(text, **params)}, result, text)
