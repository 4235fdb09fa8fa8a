"""Templates: the user's own pre/post logic in the bundle, run in the preprocess and postprocess
tiers, the inline gateway, the pyfunc and `mlflow models serve` of the bundle, with identical rows
on every path; the shipped templates against their oracles; broken templates refused clearly."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import transformers

from splitserve.client import Client
from splitserve.core.errors import ExportError
from splitserve.export import export_bundle
from tests.support.stack import Stack

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
SEED = {
    "id": [1, 2, 3],
    "content": ["Abraham Lincoln cut down a cherry tree", "Florida has nice beaches", "Elon Musk owns Tesla"],
}


def export(source: str, template: Path | str, **kwargs) -> str:
    uri = export_bundle(source, template=template, show_progress=False, **kwargs)
    return mlflow.artifacts.download_artifacts(uri)


def rows_everywhere(local_dir: str, records: list[dict], params: dict | None = None) -> dict[str, list[dict]]:
    """The rows of the three-tier gateway, the inline gateway and the pyfunc."""
    with Stack(local_dir) as stack, Client(stack.gateway) as client:
        three = client.predict(records, params=params)
    inline = {"inline_stages": local_dir, "preprocess": [], "postprocess": []}
    with Stack(local_dir, gateway=inline) as stack, Client(stack.gateway) as client:
        one = client.predict(records, params=params)
    frame = mlflow.pyfunc.load_model(local_dir).predict(pd.DataFrame(records), params=params)
    return {"three tiers": three, "inline": one, "pyfunc": frame.to_dict(orient="records")}


def mlflow_serve_rows(local_dir: str, records: list[dict]) -> list[dict]:
    """`mlflow models serve` of the bundle, over REST."""
    import requests

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [sys.executable, "-m", "mlflow", "models", "serve", "-m", local_dir, "--env-manager", "local",
            "-h", "127.0.0.1", "-p", str(port)]  # fmt: skip
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True, env=env)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/ping", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else "exited"
            assert time.monotonic() < deadline, "mlflow models serve was not ready within 180 s"
            time.sleep(0.5)
        frame = pd.DataFrame(records)
        body = {"dataframe_split": frame.to_dict(orient="split")}
        response = requests.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=60)
        assert response.ok, response.text
        return response.json()["predictions"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def test_seed_ner_rows_are_the_same_on_every_path(tiny_bundles) -> None:
    """The seed flow: NER over a DataFrame of id/content gives one row per document with id,
    content and ner_extracted, identical through the three tiers, the inline gateway, the pyfunc
    and `mlflow models serve`, and equal to what the pipeline finds."""
    exported = tiny_bundles[("token-classification", "bert")]
    local = export(exported.source_uri, TEMPLATES / "ner_rows.py", name="ner-rows")
    records = pd.DataFrame(SEED).to_dict(orient="records")
    paths = rows_everywhere(local, records)
    paths["mlflow models serve"] = mlflow_serve_rows(local, records)
    pipe = transformers.pipeline("token-classification", model=str(exported.model_dir), device=-1)
    expected = [
        {
            "id": i,
            "content": text,
            "ner_extracted": [[e["entity_group"], e["word"]] for e in pipe(text, aggregation_strategy="simple")],
        }
        for i, text in zip(SEED["id"], SEED["content"], strict=True)
    ]
    for path, rows in paths.items():
        assert rows == expected, path
    frame = mlflow.pyfunc.load_model(local).predict(pd.DataFrame(SEED))
    assert list(frame.columns) == ["id", "content", "ner_extracted"]
    assert frame["id"].tolist() == [1, 2, 3]
    config = json.loads((Path(local) / "artifacts" / "serving.json").read_text())
    assert config["template"] == "ner_rows" and "template" in config["artifacts"]
    assert config["defaults"] == {"aggregation_strategy": "simple"}  # the template's DEFAULTS


def test_flat_entities(tiny_bundles) -> None:
    exported = tiny_bundles[("token-classification", "roberta")]
    local = export(exported.source_uri, TEMPLATES / "ner_entities.py", name="ner-flat")
    pipe = transformers.pipeline("token-classification", model=str(exported.model_dir), device=-1)
    records = [{"id": f"d{i}", "content": t} for i, t in enumerate(SEED["content"])]
    expected = [
        {"id": r["id"], "entity_group": e["entity_group"], "word": e["word"], "start": e["start"], "end": e["end"]}
        for r in records
        for e in pipe(r["content"], aggregation_strategy="simple")
    ]
    for path, rows in rows_everywhere(local, records).items():
        assert [{k: v for k, v in row.items() if k != "score"} for row in rows] == expected, path
        assert all(isinstance(row["score"], float) for row in rows)


def test_long_document_embedding(tiny_bundles) -> None:
    """Texts longer than the window are embedded in overlapping chunks, one normalized mean per
    document, as computed here from the pipeline's own vectors."""
    exported = tiny_bundles[("feature-extraction", "roberta")]  # a 64-token model: long texts have chunks
    local = export(exported.source_uri, TEMPLATES / "long_embedding.py", name="long-embed")
    tok = transformers.AutoTokenizer.from_pretrained(str(exported.model_dir))
    pipe = transformers.pipeline("feature-extraction", model=str(exported.model_dir), device=-1)
    long = " ".join(f"Angela Merkel met Emmanuel Macron in Berlin on day {i}." for i in range(30))
    records = [{"id": "short", "text": "Florida has nice beaches"}, {"id": "long", "text": long}]
    params = {"window": 40, "overlap": 8}

    def expected(text: str) -> tuple[list[float], int]:
        offsets = tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        pieces = [text]
        if len(offsets) > 40:
            pieces = []
            for start in range(0, len(offsets), 32):
                piece = offsets[start : start + 40]
                pieces.append(text[piece[0][0] : piece[-1][1]])
                if start + 40 >= len(offsets):
                    break
        vectors = []
        for piece in pieces:
            v = np.asarray(pipe(piece, truncation=True)[0]).mean(axis=0)
            vectors.append(v / np.linalg.norm(v))
        mean = np.mean(vectors, axis=0)
        return (mean / np.linalg.norm(mean)).tolist(), len(pieces)

    for path, rows in rows_everywhere(local, records, params).items():
        assert [r["id"] for r in rows] == ["short", "long"], path
        for record, row in zip(records, rows, strict=True):
            vector, chunks = expected(record["text"])
            assert row["chunks"] == chunks, (path, record["id"])
            np.testing.assert_allclose(row["embedding"], vector, atol=1e-4, err_msg=f"{path} {record['id']}")
    assert rows[1]["chunks"] > 2


def test_rules_classification(tiny_bundles) -> None:
    """Labels mapped to the user's names (a file shipped in the template package), `unknown` under
    the threshold param, extra columns passed through; the template's params are validated."""
    exported = tiny_bundles[("text-classification", "bert")]
    local = export(exported.source_uri, TEMPLATES / "rules_classification", name="rules")
    pipe = transformers.pipeline("text-classification", model=str(exported.model_dir), device=-1)
    names = {"POSITIVE": "happy", "NEGATIVE": "unhappy", "NEUTRAL": "meh"}
    records = [
        {"id": "a", "text": "I love it", "customer": 42, "tags": ["vip"]},
        {"id": "b", "content": "Meh.", "customer": 7, "tags": []},
    ]
    for threshold in (0.0, 0.99):
        for path, rows in rows_everywhere(local, records, {"threshold": threshold}).items():
            for record, row in zip(records, rows, strict=True):
                top = pipe(record.get("text", record.get("content")))[0]
                assert row["id"] == record["id"] and row["customer"] == record["customer"], path
                assert row["tags"] == record["tags"], path
                assert row["label"] == (names[top["label"]] if top["score"] >= threshold else "unknown"), path
                assert math.isclose(row["score"], top["score"], abs_tol=1e-4), path
    with Stack(local) as stack, Client(stack.gateway) as client:
        for params, message in (
            ({"threshold": "high"}, "param 'threshold': expected a number"),
            ({"threshold": 2}, "template postprocess: param 'threshold': 2.0 is not in [0, 1]"),
            ({"treshold": 0.2}, "unknown param(s) ['treshold']"),
        ):
            with pytest.raises(grpc.RpcError) as err:
                client.predict(records, params=params)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            client.predict([{"id": "x", "text": "a"}, {"id": "x", "text": "b"}])
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "'x' is given twice" in err.value.details()
        assert client.predict(records[:1])[0]["customer"] == 42  # ...and it keeps serving
    signature = mlflow.models.get_model_info(local).signature.params
    assert signature.to_dict()[-1] == {"name": "threshold", "type": "double", "default": 0.5, "shape": None}


def test_extra_columns_need_a_template(tiny_bundles) -> None:
    exported = tiny_bundles[("text-classification", "bert")]
    with Stack(exported.local_dir) as stack, Client(stack.gateway) as client:
        with pytest.raises(grpc.RpcError) as err:
            client.predict([{"id": "a", "text": "fine", "source": "crm"}])
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "record 0 (id='a'): unknown field(s) ['source']" in err.value.details()
        assert client.predict([{"id": 7, "text": "fine"}])[0]["id"] == "7"  # a numeric id is fine


BROKEN = {
    "syntax": "def postprocess(records, results, params)\n    return results\n",
    "raises_at_import": "import json\nraise RuntimeError('no lookup table')\n",
    "wrong_arity": "def postprocess(records, results):\n    return results\n",
    "bad_param": "PARAMS = {'when': object()}\n",
    "fails_on_samples": "def preprocess(records, params):\n    return [{'id': r['id'], 'text': r['txt']} for r in records]\n",
}


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("syntax", "SyntaxError"),
        ("raises_at_import", "RuntimeError: no lookup table (at raises_at_import.py:2)"),
        ("wrong_arity", "postprocess must be a function of 3 arguments"),
        ("bad_param", "PARAMS['when']: the default must be"),
        ("fails_on_samples", "failed on its sample records: InvalidInput: template preprocess: missing field 'txt' (at fails_on_samples.py:2)"),
    ],
)  # fmt: skip
def test_broken_templates_fail_the_export(tiny_bundles, tmp_path, name: str, message: str) -> None:
    path = tmp_path / f"{name}.py"
    path.write_text(BROKEN[name])
    with pytest.raises(ExportError) as err:
        export_bundle(tiny_bundles[("text-classification", "bert")].source_uri, template=path, show_progress=False)
    assert message in str(err.value)
    assert "syntax.py:1" in str(err.value) if name == "syntax" else True


SERVING_FAILURES = """
import math

def preprocess(records, params):
    for r in records:
        if r.get("mode") == "refuse":
            raise ValueError(f"record {r['id']}: mode 'refuse' is not allowed")
        if r.get("mode") == "crash":
            raise RuntimeError("a bug in the template")
    return records

def postprocess(records, results, params):
    if any(r.get("mode") == "nan" for r in records):
        return [{"id": r["id"], "score": math.nan} for r in records]
    if any(r.get("mode") == "set" for r in records):
        return [{"id": r["id"], "labels": {"a", "b"}} for r in records]
    return [{"id": r["id"], "label": res["labels"][0]["label"]} for r, res in zip(records, results)]
"""


def test_a_failing_template_gets_a_clear_status_and_the_server_keeps_serving(tiny_bundles, tmp_path) -> None:
    path = tmp_path / "moody.py"
    path.write_text(SERVING_FAILURES)
    local = export(tiny_bundles[("text-classification", "bert")].source_uri, path, name="moody")
    ok = [{"id": "a", "text": "fine"}]
    for inline in (False, True):
        settings = {"inline_stages": local, "preprocess": [], "postprocess": []} if inline else {}
        with Stack(local, gateway=settings) as stack, Client(stack.gateway) as client:
            for mode, code, message in (
                (
                    "refuse",
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "template preprocess: record b: mode 'refuse' is not allowed",
                ),
                ("crash", grpc.StatusCode.INTERNAL, "internal error (incident "),
                (
                    "nan",
                    grpc.StatusCode.INTERNAL,
                    "template postprocess: row 0, key 'score': float 'nan' is not a JSON value",
                ),
                ("set", grpc.StatusCode.INTERNAL, "template postprocess: row 0, key 'labels': set"),
            ):
                with pytest.raises(grpc.RpcError) as err:
                    client.predict([*ok, {"id": "b", "text": "x", "mode": mode}])
                assert err.value.code() == code, (mode, err.value.details())
                assert message in err.value.details(), (mode, err.value.details())
                assert "Traceback" not in err.value.details()
                assert client.predict(ok) == [{"id": "a", "label": client.predict(ok)[0]["label"]}]


def test_new_template_from_the_cli(tiny_bundles, tmp_path) -> None:
    """`splitserve new-template` writes a skeleton that exports as is (rows = the task's results)
    and serves through `splitserve predict`, all in fresh processes."""
    env = os.environ.copy()
    run = [sys.executable, "-m", "splitserve"]
    made = subprocess.run(
        [*run, "new-template", "my_rows", "--dir", str(tmp_path)], capture_output=True, text=True, env=env
    )
    assert made.returncode == 0, made.stderr
    skeleton = tmp_path / "my_rows.py"
    assert made.stdout.strip() == str(skeleton) and "def postprocess(records, results, params):" in skeleton.read_text()
    again = subprocess.run(
        [*run, "new-template", "my_rows", "--dir", str(tmp_path)], capture_output=True, text=True, env=env
    )
    assert again.returncode != 0 and "exists" in again.stderr and "Traceback" not in again.stderr
    source = tiny_bundles[("text-classification", "bert")].source_uri
    exported = subprocess.run(
        [*run, "export", source, "--template", str(skeleton), "--no-progress"], capture_output=True, text=True, env=env
    )
    assert exported.returncode == 0, exported.stderr[-2000:]
    bundle = exported.stdout.strip().splitlines()[-1]
    local = mlflow.artifacts.download_artifacts(bundle)
    with Stack(local) as stack:
        out = subprocess.run(
            [*run, "predict", "--target", stack.gateway, '{"id": "t", "text": "fine", "note": "kept"}'],
            capture_output=True, text=True, env=env,
        )  # fmt: skip
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)
    assert row["id"] == "t" and {label["label"] for label in row["labels"]} <= {"NEGATIVE", "NEUTRAL", "POSITIVE"}
