"""The CLI's log/export contract (URI as the last stdout line), a registered bundle served by
alias, and the pyfunc's refusals (each task's pyfunc parity is in tests/tasks/)."""

from __future__ import annotations

import os
import subprocess
import sys

import mlflow.pyfunc
import pandas as pd
import pytest

from splitserve.client import Client
from splitserve.core.errors import InvalidInput
from tests.support.stack import Stack


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "splitserve", *args], capture_output=True, text=True, env=os.environ.copy()
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_cli_log_and_export_print_uris(mlflow_store, tiny_bundles) -> None:
    model_dir = tiny_bundles[("text-classification", "roberta")].model_dir
    logged = run_cli("log", "--model-dir", str(model_dir), "--task", "text-classification", "--register", "cli-src")
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
        [sys.executable, "-m", "splitserve", "log", "--model-dir", str(tmp_path), "--task", "object-detection"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "task 'object-detection' is not supported" in proc.stderr


def test_pyfunc_rejects_bad_records(tiny_bundles) -> None:
    model = mlflow.pyfunc.load_model(tiny_bundles[("feature-extraction", "bert")].local_dir)
    with pytest.raises(InvalidInput, match=r"record 1 \(id='b'\): field 'text' is empty"):
        model.predict(pd.DataFrame({"id": ["a", "b"], "content": ["fine", ""]}))
