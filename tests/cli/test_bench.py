"""`splitserve bench` end to end on a tiny model, briefly: the report files, the MLflow run, and
the request corpus. (Performance itself is measured by the committed benchmark, not here.)"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import mlflow
import psutil
import pytest

from splitserve.bench import docstring_corpus, fixed_length_set, run_bench
from tests.support.cli import SPLITSERVE


def test_corpus_is_real_text_of_mixed_length() -> None:
    corpus = docstring_corpus()
    lengths = sorted(len(s.split()) for s in corpus)
    assert len(corpus) == 512 and len(set(corpus)) == 512
    assert lengths[0] >= 4 and lengths[-1] <= 80 and lengths[len(lengths) // 2] < lengths[-1] // 2
    assert {len(s.split()) for s in fixed_length_set(corpus)} == {24}


def test_bench_runs_and_reports(tiny_bundles, tmp_path) -> None:
    source = tiny_bundles[("feature-extraction", "bert")].source_uri
    report = run_bench(
        source,
        tmp_path,
        concurrency=(1, 2),
        batch_sizes=(1, 4),
        seconds=0.3,
        targets=(
            "gateway-onnx-fp32",
            "gateway-onnx-fp32-inline",
            "model-tier-onnx-fp32",
            "pyfunc-in-process",
            "pipeline-in-process",
        ),
        command="pytest",
        repeats=2,
    )
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["headline"] == report["headline"]
    points = saved["points"]
    assert {p["target"] for p in points} == {
        "gateway-onnx-fp32",
        "gateway-onnx-fp32-inline",
        "model-tier-onnx-fp32",
        "pyfunc-in-process",
        "pipeline-in-process",
    }
    assert all(p["errors"] == 0 and p["records"] > 0 for p in points)
    gateway = [t for t in saved["targets"] if t["target"] == "gateway-onnx-fp32"][0]
    assert {"preprocess", "model", "postprocess", "gateway"} <= set(gateway["peak_rss_mb"])
    assert all(
        set(p["cpu_s_per_record"]) >= {"preprocess", "model"} for p in points if p["target"] == "gateway-onnx-fp32"
    )
    assert "gateway_fp32_vs_inprocess_pyfunc_c2_b4" in saved["headline"]
    assert saved["headline"]["gateway_inline_added_p50_ms_c1_b1"] is not None
    inline = [t for t in saved["targets"] if t["target"] == "gateway-onnx-fp32-inline"][0]
    assert set(inline["peak_rss_mb"]) >= {"model", "gateway"} and "preprocess" not in inline["peak_rss_mb"]
    table = saved["capacity"]["cpu"]  # pods per model pod, for `splitserve k8s --capacity results.json`
    assert set(table["pods_per_model_pod"]) == {"preprocess", "postprocess", "gateway", "gateway-inline"}
    assert table["model_pod_records_per_s"] > 0
    assert "## Capacity (cpu): pods per model pod" in (tmp_path / "results.md").read_text()
    for name in ("results.md", "throughput.png", "latency_p50.png", "latency_percentiles.png"):
        assert (tmp_path / name).stat().st_size > 0
    runs = mlflow.search_runs(filter_string="attributes.run_name = 'splitserve-bench'", search_all_experiments=True)
    assert len(runs) >= 1
    # Every point twice (medians and spread), and how far from this machine's GEMM roof.
    assert all(len(p["runs_rps"]) == 2 and p["throughput_rps"] > 0 for p in points)
    assert saved["flops_per_record"]["docstrings"] > 0
    assert all(saved["roofs_gflop_per_cpu_s"][k] > 0 for k in ("fp32", "int8"))  # int8: an IR version ORT reads
    assert all(p["gflop_per_cpu_s"] > 0 and p["roof_fraction"] > 0 for p in points)
    assert "## Roofline" in (tmp_path / "results.md").read_text()
    tier = [p for p in points if p["target"] == "model-tier-onnx-fp32"]
    assert all(0 <= p["padding_fraction"] < 1 for p in tier)  # read off the model tier's own metrics


@pytest.mark.parametrize("to", ["process group", "bench process"])
def test_ctrl_c_stops_the_bench_and_writes_what_was_measured(tiny_bundles, tmp_path: Path, to: str) -> None:
    """Issue 24: Ctrl-C ended in a traceback (`KeyError: 'model'`) with an empty folder, and a SIGINT to
    the bench process alone was ignored. Now either stops it within a request; the report holds every
    point measured, says it was interrupted, and no process of it is left."""
    source = tiny_bundles[("feature-extraction", "bert")].source_uri
    out = tmp_path / "out"
    argv = [*SPLITSERVE, "bench", "--source-uri", source, "--out", str(out), "--seconds", "0.5"]
    argv += ["--targets", "pyfunc-in-process", "gateway-onnx-fp32"]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, cwd=tmp_path
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
    reader.start()
    deadline = time.monotonic() + 300
    while not any(line.startswith("✓ gateway-onnx-fp32 docstrings c=1 b=1:") for line in lines):
        assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
        time.sleep(0.1)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert any("serve-model" in " ".join(c.cmdline()) for c in children)
    if to == "process group":  # what a terminal's Ctrl-C does
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=120)
    reader.join(10)
    err = "".join(lines)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert lines[0].startswith("bench: 2 target(s) × 4 points × 1 run(s) of 0.5s, about ")
    assert "in all (estimated)" in lines[0]
    assert re.search(
        r"^… \[5/8\] gateway-onnx-fp32 docstrings c=1 b=1; \d+(m\d\d)?s elapsed, about \S+ left$", err, re.M
    )
    report = json.loads((out / "results.json").read_text())
    assert report["interrupted"] is True and report["planned_points"] == 8
    measured = [(p["target"], p["request_set"], p["concurrency"], p["batch_size"]) for p in report["points"]]
    assert len(measured) >= 5 and measured[4] == ("gateway-onnx-fp32", "docstrings", 1, 1), measured
    assert all(v is not None for v in report["headline"].values())  # rows only for what ran
    text = (out / "results.md").read_text()
    assert f"**Interrupted** after {len(measured)} of 8 points" in text and text in stdout
    gone = psutil.wait_procs(children, timeout=30)[1]
    assert gone == [], [" ".join(p.cmdline()) for p in gone]


def test_headline_has_rows_only_for_what_ran() -> None:
    """Issue 24: a run of a few targets printed a headline table of `None` rows."""
    from splitserve.bench.load import Point
    from splitserve.bench.report import headline, markdown

    def point(target: str, rps: float) -> Point:
        return Point(target, "docstrings", 16, 8, 10, 80, 1.0, rps, 1.0, 2.0, 3.0, 0)

    heads = headline([point("gateway-onnx-fp32", 150.0), point("gateway-torch", 100.0)], (1, 16), (1, 8))
    assert heads == {"onnx_fp32_vs_torch_tier_c16_b8": 1.5}
    assert headline([point("pyfunc-in-process", 90.0)], (1, 16), (1, 8)) == {}
    assert "## Headline ratios" not in markdown([point("pyfunc-in-process", 90.0)], [], {}, "splitserve bench")
