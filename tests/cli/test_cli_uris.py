"""Every README command on the MLflow URIs users give (`models:/name@alias`, `models:/name/N`,
`runs:/<run>/bundle`, `models:/m-<id>`), in fresh processes, for a plain bundle and a templated
one: `up` (three tiers, inline stages, several bundles, --watch-alias), the tiers one by one
(`serve-*`), `inspect`, `k8s`/`kserve`, and `mlflow models serve`. A templated bundle once could
not be served by `up` from a `models:/` URI while every in-process template test passed."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from splitserve.client import Client
from splitserve.export import export_bundle
from tests.export.test_templates import SEED, TEMPLATES, mlflow_serve_rows
from tests.support.cli import SPLITSERVE, run, up

# The seed's DataFrame flow: id, content and a column of the user's own.
RECORDS = [{**r, "source": f"crm-{r['id']}"} for r in pd.DataFrame(SEED).to_dict(orient="records")]


@pytest.fixture(scope="module")
def uris(tiny_bundles) -> dict[str, str]:
    """A templated NER bundle registered as `seed-ner` (alias `champion`) and a plain classifier
    registered as `plain-tc`, and the other URIs of the templated one."""
    ner = tiny_bundles[("token-classification", "bert")].source_uri
    templated = export_bundle(ner, template=TEMPLATES / "ner_rows.py", register="seed-ner", show_progress=False)
    version = templated.rsplit("/", 1)[1]
    mlflow.MlflowClient().set_registered_model_alias("seed-ner", "champion", version)
    info = mlflow.models.get_model_info(templated)
    plain = tiny_bundles[("text-classification", "bert")].source_uri
    return {
        "alias": "models:/seed-ner@champion",
        "version": templated,
        "run": f"runs:/{info.run_id}/bundle",
        "model id": f"models:/{info.model_id}",
        "plain": export_bundle(plain, register="plain-tc", show_progress=False),
    }


@pytest.fixture(scope="module")
def expected(uris) -> list[dict]:
    """The rows of the bundle's pyfunc, in this process: what every door must answer."""
    rows = mlflow.pyfunc.load_model(uris["alias"]).predict(pd.DataFrame(RECORDS)).to_dict(orient="records")
    assert [r["source"] for r in rows] == ["crm-1", "crm-2", "crm-3"] and "ner_extracted" in rows[0]
    return rows


@contextlib.contextmanager
def serve(*args: str) -> Iterator[dict]:
    """`splitserve serve-* ...` in a fresh process; its ready line, then SIGTERM."""
    proc = subprocess.Popen(
        [*SPLITSERVE, *args, "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()
        assert line, f"{args[0]} exited: {proc.stderr.read()[-3000:]}"
        yield json.loads(line)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def rows(gateway: str, model: str = "") -> list[dict]:
    with Client(gateway) as client:
        return client.predict(RECORDS, model=model)


def test_up_serves_a_templated_bundle_from_an_alias(uris, expected) -> None:
    """The seed's flow from `models:/name@alias`: the same rows through `up`'s three tiers, its
    inline gateway, and `mlflow models serve` of the same URI."""
    with up(uris["alias"]) as addresses:
        assert rows(addresses["gateway"]) == expected
    with up(uris["alias"], "--inline-stages") as addresses:
        assert rows(addresses["gateway"]) == expected
    assert mlflow_serve_rows(uris["alias"], RECORDS) == expected


def test_tiers_started_one_by_one_on_each_kind_of_uri(uris, expected) -> None:
    """serve-preprocess, serve-model and serve-postprocess each from another URI of the same
    bundle (same fingerprint), fetched by each tier into the host's cache; a gateway over them."""
    with (
        serve("serve-preprocess", uris["run"]) as pre,
        serve("serve-model", uris["model id"]) as model,
        serve("serve-postprocess", uris["version"]) as post,
    ):
        assert pre["fingerprint"] == model["fingerprint"] == post["fingerprint"]
        gateway_args = ("--preprocess", pre["address"], "--model", model["address"], "--postprocess", post["address"])
        with serve("serve-gateway", *gateway_args) as gateway:
            assert rows(gateway["address"]) == expected


def test_several_bundles_and_alias_following_with_a_template(uris, expected) -> None:
    """`up` of a plain bundle beside the templated one (requests choose by model), and `up
    --watch-alias` on the templated alias: every tier fetches the template itself."""
    with up(uris["plain"], uris["alias"]) as addresses:
        assert rows(addresses["gateway"], model="seed-ner") == expected
        with Client(addresses["gateway"]) as client:
            assert client.predict(["Florida has nice beaches"], model="plain-tc")[0]["labels"]
    with up(uris["alias"], "--watch-alias") as addresses:
        assert rows(addresses["gateway"]) == expected


def test_inspect_and_manifests_take_every_uri(uris, tmp_path) -> None:
    for uri in (uris["alias"], uris["run"], uris["model id"]):
        out = run("inspect", uri)
        assert out.returncode == 0 and "ner_rows" in out.stdout, out.stderr[-2000:]
    for command in ("k8s", "kserve"):
        out = run(command, uris["alias"], "--out", str(tmp_path / command), "--image", "registry.example/splitserve:1")
        assert out.returncode == 0, out.stderr[-2000:]
        text = "\n".join(p.read_text() for p in Path(tmp_path / command).rglob("*.yaml"))
        assert uris["alias"] in text
