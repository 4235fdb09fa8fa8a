"""Issue 24, the first hour of a new user: each mistake they made gets one clear line, from the CLI in a
fresh process; a command that only reads writes nothing where it runs; output is plain and whole
when it is not on a terminal; a stopped export leaves nothing behind."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.support.cli import SPLITSERVE, one_error_line, run

REPO = Path(__file__).resolve().parents[2]


def test_predict_refuses_a_record_that_is_not_json() -> None:
    out = run("predict", "--target", "127.0.0.1:1", "a text", '{"id": 1, content: "Angela Merkel"}')
    line = one_error_line(out)
    assert line == (
        "error: record 1 starts with '{' but is not valid JSON (Expecting property name enclosed in double quotes: "
        "line 1 column 11 (char 10)); quote the object's keys and strings with double quotes, "
        'e.g. \'{"text": "..."}\''
    )
    assert one_error_line(run("predict", "--target", "127.0.0.1:1", "{}[]")).startswith(
        "error: record 0 starts with '{' but is not valid JSON (Extra data"
    )


def test_up_names_the_busy_rest_port() -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        line = one_error_line(run("up", "models:/anything/1", "--rest-port", str(port)))
    assert line == (
        f"error: cannot listen on port {port} on 127.0.0.1 (--rest-port): Address already in use; "
        "choose another --rest-port"
    )


def test_help_lists_bench_targets_and_defaults() -> None:
    from splitserve.bench.plan import ALL_TARGETS, DEFAULT

    text = " ".join(run("bench", "--help").stdout.split())
    assert all(f" {name} " in text for name in ALL_TARGETS)
    assert "--full" in text and f"By default {', '.join(DEFAULT.targets)}," in text
    assert re.search(r"about \dm\d\ds on 2 cores", text)  # the default's estimate, under 5 minutes
    assert "(default: 0.0001)" in " ".join(run("export", "--help").stdout.split())  # --tolerance


def test_bench_refuses_an_unknown_target_in_one_line(tmp_path: Path) -> None:
    out = run("bench", "--targets", "gateway-onnx-fp32", "bogus", "--out", str(tmp_path / "b"), cwd=tmp_path)
    assert one_error_line(out) == (
        "error: --targets: no target bogus; the targets are gateway-onnx-fp32, gateway-onnx-int8, gateway-torch, "
        "gateway-onnx-fp32-inline, gateway-onnx-int8-inline, gateway-cache-0, gateway-cache-50, gateway-cache-90, "
        "model-tier-onnx-fp32, model-tier-onnx-int8, "
        "model-tier-torch, model-tier-torch-bf16, pipeline-in-process, pyfunc-in-process, pyfunc-in-process-int8, "
        "mlflow-models-serve"
    )
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_not_found_names_the_store_and_reading_writes_nothing(mlflow_store: Path, tmp_path: Path) -> None:
    """`up models:/x/1` from another folder: one line naming the store searched; no empty mlflow.db left."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    default = f"sqlite:///{elsewhere / 'mlflow.db'}"
    for args in (("up", "models:/x/1"), ("inspect", "models:/x/1"), ("serve-preprocess", "models:/x/1")):
        line = one_error_line(run(*args, cwd=elsewhere, env=env))
        assert line.endswith(
            f"cannot read bundle 'models:/x/1': there is no MLflow tracking store at {default} (no such file): "
            "set MLFLOW_TRACKING_URI to the store models:/x/1 was logged to"
        ), line
    assert one_error_line(run("export", "runs:/0123/model", cwd=elsewhere, env=env)) == (
        f"error: cannot find the source model 'runs:/0123/model': there is no MLflow tracking store at {default} "
        "(no such file): set MLFLOW_TRACKING_URI to the store runs:/0123/model was logged to"
    )
    assert list(elsewhere.iterdir()) == []  # no mlflow.db, no mlruns/
    store = os.environ["MLFLOW_TRACKING_URI"]
    line = one_error_line(run("up", "models:/no-such-model/1", cwd=elsewhere))
    assert line == (
        "error: cannot read bundle 'models:/no-such-model/1': Registered Model with name=no-such-model not found "
        f"(looked up in the MLflow tracking store {store})"
    )
    line = one_error_line(run("export", "models:/no-such-model/1", cwd=elsewhere))
    assert line.startswith("error: cannot find the source model 'models:/no-such-model/1': ")
    assert line.endswith(f"(looked up in the MLflow tracking store {store})")
    assert list(elsewhere.iterdir()) == []


def test_log_names_a_model_dir_it_cannot_load(mlflow_store: Path, tmp_path: Path) -> None:
    missing = tmp_path / "my-model"
    assert one_error_line(run("log", "--model-dir", str(missing), "--task", "text-classification")) == (
        f"error: --model-dir {missing}: no such folder (a saved Hugging Face model and its tokenizer)"
    )
    missing.mkdir()  # a folder holding the model one level down: no config.json at its top
    (missing / "inner").mkdir()
    line = one_error_line(run("log", "--model-dir", str(missing), "--task", "text-classification"))
    assert line.startswith(f"error: --model-dir {missing}: cannot load a text-classification pipeline from it: "), line


def test_llm_embeddings_task_is_refused_in_its_own_words(mlflow_store: Path, tmp_path: Path) -> None:
    import mlflow
    import transformers

    from splitserve.commands.log import source_requirements
    from tests.support.zoo.encoders import save_tiny

    model_dir = save_tiny("feature-extraction", "bert", tmp_path)
    pipe = transformers.pipeline("feature-extraction", model=str(model_dir), tokenizer=str(model_dir), device=-1)
    with mlflow.start_run():
        uri = mlflow.transformers.log_model(
            pipe, name="model", task="llm/v1/embeddings", pip_requirements=source_requirements()
        ).model_uri
    assert one_error_line(run("export", uri, "--no-progress")) == (
        "error: the source model was logged with MLflow's task='llm/v1/embeddings' (OpenAI-style embeddings input "
        "and output schemas), which splitserve does not take; log it as a plain feature-extraction pipeline "
        '(without `task="llm/v1/embeddings"`): the gateway then answers that schema itself at POST /v1/embeddings'
    )


ANSI = re.compile(r"\x1b\[")


def test_log_and_export_print_plain_whole_lines(mlflow_store: Path, tmp_path: Path) -> None:
    """Not on a terminal: no colour codes, no spinner frames, no line cut short, none of MLflow's
    model-card, licence or type-hint warnings, no "Device set to use cpu"."""
    from tests.support.zoo.encoders import save_tiny

    model_dir = save_tiny("text-classification", "bert", tmp_path)
    logged = run("log", "--model-dir", str(model_dir), "--task", "text-classification", "--register", "quiet-src")
    assert logged.returncode == 0, logged.stderr[-3000:]
    assert logged.stdout.strip() == "models:/quiet-src/1"
    exported = run("export", "models:/quiet-src/1", "--register", "quiet-serving", timeout=600)
    assert exported.returncode == 0, exported.stderr[-3000:]
    for out in (logged, exported):
        noise = [
            line
            for line in out.stderr.splitlines()
            if ANSI.search(line)
            or "\r" in line
            or any(
                s in line
                for s in ("model card", "license information", "Device set to use", "Add type hints", "Traceback")
            )
        ]
        assert noise == [], noise
    lines = exported.stderr.splitlines()
    assert re.fullmatch(
        r"✓ Logged serving bundle models:/quiet-serving/1 \(fingerprint [0-9a-f]{32}\) \(\d+\.\ds\)", lines[-1]
    ), lines[-1]
    assert "… Checking ONNX against PyTorch" in lines


def test_sigterm_stops_export_and_removes_its_temp_folder(tiny_bundles, tmp_path: Path) -> None:
    source = tiny_bundles[("text-classification", "bert")].source_uri
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = subprocess.Popen(
        [*SPLITSERVE, "export", source, "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 240
    # Stopped once the export has written into its folder (the ONNX graph on its way), as the fault run did.
    while not any(f.is_file() for d in tmp.glob("splitserve-export-*") for f in d.rglob("*")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    written = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    left = [p.name for p in tmp.iterdir() if p.name.startswith("splitserve-export-")]
    assert written > 0 and left == [], (written, left)


def test_readme_shows_what_a_new_user_needs() -> None:
    text = (REPO / "README.md").read_text()
    commands = [line for line in text.splitlines() if line.startswith("splitserve log ")]
    assert commands and not [c for c in commands if " --name " in c]  # the deprecated spelling
    assert "runs in the foreground" in text and "Ctrl-C" in text  # `up`
    assert "from splitserve import errors" in text and "except errors.InvalidInput" in text
