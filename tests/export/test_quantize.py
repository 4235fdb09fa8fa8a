"""int8 export: a dynamically quantized ONNX graph replaces the fp32 one in the bundle, only
when it keeps the fp32 graph's quality on sample texts (the export's quality gate)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from splitserve.core import cpu
from splitserve.core.bundle import load_bundle
from splitserve.core.errors import ExportError
from splitserve.core.quality import unpack
from splitserve.export import DEFAULT_QUALITY_THRESHOLDS, export_bundle
from splitserve.export.corpus import GATE_TEXTS
from splitserve.export.samples import QUALITY_TEXTS, SAMPLE_TEXTS
from splitserve.inprocess import InProcessPipeline

# int8 all-MiniLM-L6-v2 keeps a mean cosine of about 0.99 over the gate's ~160 texts, but the
# lowest one (short texts) is 0.92-0.94 for the fastest candidates (static QDQ, dynamic 7-bit) on
# a VNNI CPU: this test names the floor it checks explicitly, so that both pass and the faster is kept.
MINILM_MIN_COSINE = 0.9
# No fast int8 candidate (static QDQ, dynamic) keeps 0.97 of MiniLM's nearest neighbours on the
# gate corpus (benchmarks/int8-candidates.md: dynamic keeps 0.91-0.92 on a VNNI CPU; the default
# gate keeps the slower blockwise graph); this test accepts that loss explicitly, for speed.
MINILM_TOP1 = 0.85

# The gate's texts: the export's samples and the gate corpus, held apart from calibration.
GATE_SIZE = len(SAMPLE_TEXTS) + len(QUALITY_TEXTS) + len(GATE_TEXTS)
# A ranking threshold for tiny random-weight models (their near-tied neighbours swap under any
# int8: the best candidate keeps ~0.9 of the tiny BERT's, short of the 0.97 default).
TINY_RANKING = {"top1_agreement": 0.8}

SENTENCES = [
    "Which state is good for a seaside holiday?",
    "Florida has nice beaches",
    "Abraham Lincoln cut down a cherry tree",
    "Elon Musk owns Tesla",
    "The invoice is due at the end of the month.",
    "Élodie vit à Zürich et mange des crêpes",
]


def run_metrics(bundle_uri: str) -> dict[str, float]:
    import mlflow

    return mlflow.get_run(mlflow.models.get_model_info(bundle_uri).run_id).data.metrics


def onnx_size(local_dir: str) -> int:
    return sum(f.stat().st_size for f in (Path(local_dir) / "artifacts" / "onnx").iterdir())


def mean_pooled(bundle_uri: str) -> np.ndarray:
    pipeline = InProcessPipeline(load_bundle(bundle_uri, ("tokenizer", "onnx")))
    results = pipeline.predict(SENTENCES, params={"pooling": "mean", "normalize": True})
    return np.asarray([r["embedding"] for r in results])


def test_minilm_int8(minilm_bundle) -> None:
    import mlflow

    uri = export_bundle(
        minilm_bundle.source_uri,
        name="minilm-int8",
        quantize="int8",
        quality_thresholds={"min_cosine": MINILM_MIN_COSINE, "top1_agreement": MINILM_TOP1},
        show_progress=False,
    )
    local = mlflow.artifacts.download_artifacts(uri)
    config = json.loads((Path(local) / "artifacts" / "serving.json").read_text())
    assert config["quantization"] == "int8"
    assert config["onnx_file"] == "model.onnx"
    assert config["name"] == "minilm-int8"
    fp32_size, int8_size = onnx_size(minilm_bundle.local_dir), onnx_size(local)
    print(f"\nMiniLM ONNX: fp32 {fp32_size / 1e6:.1f} MB, int8 {int8_size / 1e6:.1f} MB")
    # Which passing candidate is kept is timed on this CPU. Dynamic quantization also quantizes the
    # word embeddings (a quarter of the size); static QDQ quantizes the products only (they stay fp32).
    kept = next(c["candidate"] for c in config["int8_check"]["candidates"] if c["kept"])
    assert int8_size < (0.7 if kept.startswith("static") else 0.3) * fp32_size, kept

    metrics = run_metrics(uri)
    print({k: round(v, 5) for k, v in sorted(metrics.items())})
    assert metrics["int8_min_cosine"] >= MINILM_MIN_COSINE
    assert metrics["int8_min_cosine_threshold"] == MINILM_MIN_COSINE
    assert metrics["int8_mean_cosine"] >= 0.98
    assert metrics["parity_max_abs_diff"] < 1e-4  # the fp32 graph, checked against PyTorch before quantizing
    assert config["parity"]["int8_min_cosine"] == pytest.approx(metrics["int8_min_cosine"])
    assert metrics["int8_top1_agreement"] >= MINILM_TOP1 and metrics["int8_top1_agreement_threshold"] == MINILM_TOP1
    # every candidate tried is recorded, fastest first (static QDQ, then dynamic 7-bit: both tried);
    # the kept one passed
    tried = config["int8_check"]["candidates"]
    assert tried[0]["candidate"].startswith("static QDQ") and len(tried) >= 2
    (kept,) = [c for c in tried if c["kept"]]
    assert kept["passed"] and kept["candidate"].startswith(config["quantization_weights"])
    assert all(c["records_per_s"] > 0 and c["speedup"] > 0 for c in tried)

    # In process, the int8 bundle keeps what the gate promises on other sentences too. Not a
    # ranking: neighbours whose similarities are close swap on CPUs whose int8 kernels differ
    # (seen on AVX-512 VNNI: two fp32 similarities 0.0207 apart), and dynamic quantization's
    # activation scales depend on which rows run together.
    fp32, int8 = mean_pooled(minilm_bundle.local_dir), mean_pooled(local)
    cosines = (fp32 * int8).sum(1)
    print("in-process cosine int8 vs fp32:", np.round(cosines, 4))
    assert cosines.min() >= MINILM_MIN_COSINE, cosines
    assert cosines.mean() >= DEFAULT_QUALITY_THRESHOLDS["mean_cosine"], cosines


def test_minilm_int8_that_keeps_ranking_is_blockwise(minilm_bundle) -> None:
    """Past every faster candidate (static QDQ and dynamic keep 0.86-0.93 of MiniLM's nearest
    neighbours), a blockwise graph (MatMulNBits: activations quantized per block of each row)
    keeps the ranking: blocks of 32 reach 0.975 top-1 over the gate corpus on a VNNI CPU (blocks of
    128: 0.9497); 0.96 asked here, so that a neighbour more or less on another CPU's kernels does
    not decide the test, and what is checked after holds for either block size."""
    import mlflow
    import onnx

    uri = export_bundle(
        minilm_bundle.source_uri, quantize="int8", quality_thresholds={"top1_agreement": 0.96}, show_progress=False
    )
    local = mlflow.artifacts.download_artifacts(uri)
    bundle = load_bundle(local, ("tokenizer", "onnx"))
    check = bundle.config.int8_check
    assert check is not None
    (kept,) = [c for c in check.candidates if c["kept"]]
    assert kept["candidate"].startswith("blockwise, 8-bit weights in blocks of"), check.candidates
    assert all(not c["passed"] for c in check.candidates if not c["candidate"].startswith("blockwise"))
    assert bundle.config.quantization_weights == kept["candidate"]
    from splitserve.commands.inspect import describe

    assert describe(uri)["quantization_weights"] == kept["candidate"]  # what `splitserve inspect` shows
    assert "MatMulNBits" in {n.op_type for n in onnx.load(str(bundle.onnx_path)).graph.node}
    metrics = run_metrics(uri)
    assert metrics["int8_top1_agreement"] >= 0.96 and metrics["int8_mean_cosine"] >= 0.998, metrics
    # the model tier's repeat of the gate passes on this CPU; other sentences keep their vectors
    fp32, int8 = mean_pooled(minilm_bundle.local_dir), mean_pooled(local)
    cosines = (fp32 * int8).sum(1)
    assert cosines.min() >= 0.995, cosines


def test_impossible_thresholds_fail_the_export(tiny_bundles) -> None:
    source = tiny_bundles[("feature-extraction", "bert")].source_uri
    with pytest.raises(ExportError, match=r"top1_agreement = [01]\.\d+ < threshold 1\.01 \(nearest-neighbour"):
        export_bundle(source, quantize="int8", quality_thresholds={"top1_agreement": 1.01}, show_progress=False)
    with pytest.raises(ExportError, match=r"min_cosine = 0\.\d+ < threshold 1\.0000001"):
        export_bundle(source, quantize="int8", quality_thresholds={"min_cosine": 1.0000001}, show_progress=False)
    source = tiny_bundles[("token-classification", "bert")].source_uri
    with pytest.raises(ExportError, match=r"label_agreement = [01]\.\d+ < threshold 1\.01"):
        export_bundle(source, quantize="int8", quality_thresholds={"label_agreement": 1.01}, show_progress=False)


def test_remedies_leave_the_most_sensitive_products_in_fp32(tiny_bundles) -> None:
    """The quantizations tried until the gate passes, fastest first: everything, then the last
    layer's feed-forward products in fp32, the last two layers', the whole last layer (and head)."""
    from splitserve.export.int8_candidates import remedies

    onnx_path = Path(tiny_bundles[("text-classification", "bert")].local_dir) / "artifacts" / "onnx" / "model.onnx"
    tried = remedies(onnx_path)
    assert [what for what, _ in tried] == [
        "nothing",
        "the last layer's feed-forward",
        "the last two layers' feed-forward",
        "the last layer and the head",
    ]
    last = max(int(n.split("layer.")[1].split("/")[0]) for _, nodes in tried for n in nodes)
    assert tried[0][1] == [] and all(f"layer.{last}/" in n and "attention" not in n for n in tried[1][1])
    assert set(tried[1][1]) < set(tried[2][1]) and any("attention" in n for n in tried[3][1])


def test_a_gate_no_candidate_passes_names_them_and_a_passing_one_is_recorded(tiny_bundles) -> None:
    """Past every candidate, the refusal names the threshold, the best each failing metric reached
    (and by which candidate) and every candidate tried, fastest first, with its metrics and speed.
    A passing export records each candidate it tried in the bundle (`int8_check.candidates`)."""
    from splitserve.export.int8_candidates import STATIC_FORMAT, candidates

    source = tiny_bundles[("feature-extraction", "bert")].source_uri
    onnx_path = Path(tiny_bundles[("feature-extraction", "bert")].local_dir) / "artifacts" / "onnx" / "model.onnx"
    names = [c.name for c in candidates(onnx_path)]
    assert names[0] == STATIC_FORMAT and names[1] == "dynamic, 7-bit signed weights"
    assert names[-2:] == ["blockwise, 8-bit weights in blocks of 128", "blockwise, 8-bit weights in blocks of 32"]
    with pytest.raises(ExportError) as failed:
        export_bundle(source, quantize="int8", quality_thresholds={"min_cosine": 1.0000001}, show_progress=False)
    message = str(failed.value)
    assert re.search(r"the best reached: min_cosine = 0\.\d+ < threshold 1\.0000001 \(lowest cosine.*\) by ", message)
    assert f"over {GATE_SIZE} gate texts" in message and "Refusing to export" in message
    tried = message.split("Tried, fastest first: ")[1]
    positions = [tried.index(f"{n} (min_cosine ") for n in names]
    assert positions == sorted(positions)
    assert re.search(r"top1_agreement [01]\.\d{4}, \d+\.\d\dx fp32\)", tried)
    import mlflow

    # Any candidate passes: the first two (static QDQ, dynamic 7-bit) are both tried, the faster
    # kept (as timed at export), both recorded.
    low = {"min_cosine": 0.0, "mean_cosine": 0.0, "top1_agreement": 0.0}
    local = mlflow.artifacts.download_artifacts(
        export_bundle(source, quantize="int8", quality_thresholds=low, show_progress=False)
    )
    bundle = load_bundle(local, ("tokenizer", "onnx"))
    assert bundle.config.quantization == "int8"
    assert bundle.config.parity["int8_excluded_nodes"] == len(bundle.config.quantization_excluded)
    assert bundle.config.parity["int8_candidates_tried"] == 2 and bundle.config.parity["int8_speedup"] > 0
    check = bundle.config.int8_check
    assert check is not None and [c["candidate"] for c in check.candidates] == names[:2]
    assert all(c["passed"] and c["records_per_s"] > 0 for c in check.candidates)
    (kept,) = [c for c in check.candidates if c["kept"]]
    assert kept["candidate"].startswith(bundle.config.quantization_weights)
    assert kept["top1_agreement"] == pytest.approx(check.export_metrics["int8_top1_agreement"], abs=1e-5)
    import onnx

    ops = {n.op_type for n in onnx.load(str(bundle.onnx_path)).graph.node}
    static = bundle.config.quantization_weights == STATIC_FORMAT
    assert ("QuantizeLinear" in ops) == static
    assert ("DynamicQuantizeLinear" in ops) == (not static)
    assert sorted(p.name for p in Path(bundle.onnx_path).parent.iterdir()) == ["model.onnx"]
    InProcessPipeline(bundle)  # the model tier's repeat of the gate runs static QDQ too, and passes here


def test_bad_quantize_arguments() -> None:
    with pytest.raises(ExportError, match="unknown quality threshold"):
        export_bundle("models:/unused/1", quantize="int8", quality_thresholds={"cosine": 0.9})
    with pytest.raises(ExportError, match="only apply to a quantized export"):
        export_bundle("models:/unused/1", quality_thresholds={"min_cosine": 0.9})
    with pytest.raises(ExportError, match="not supported"):
        export_bundle("models:/unused/1", quantize="int4")


def test_tiny_text_classification_int8(tiny_bundles) -> None:
    """A 2-layer, 32-wide random-weight classifier (zoo.tiny_model, init std 0.5). Its attention
    softmaxes are saturated, so int8 rounding moves logits by as much as their spread and about
    a third of the labels change: the default gate (99% agreement) must refuse it, naming the
    measured agreement. With a threshold meant for a random model (50%) it exports, and the
    measured agreement is recorded."""
    source = tiny_bundles[("text-classification", "bert")].source_uri
    with pytest.raises(ExportError, match=r"label_agreement = 0\.\d+ < threshold 0\.99 \(label agreement"):
        export_bundle(source, name="tiny-tc-int8", quantize="int8", show_progress=False)

    uri = export_bundle(
        source, name="tiny-tc-int8", quantize="int8", quality_thresholds={"label_agreement": 0.5}, show_progress=False
    )
    metrics = run_metrics(uri)
    print("\ntiny text-classification int8:", {k: v for k, v in sorted(metrics.items()) if k.startswith("int8_")})
    assert 0.5 <= metrics["int8_label_agreement"] < DEFAULT_QUALITY_THRESHOLDS["label_agreement"]
    assert metrics["int8_label_agreement_threshold"] == 0.5
    assert metrics["int8_label_count"] == GATE_SIZE  # the gate's texts, one label each
    bundle = load_bundle(uri, ("tokenizer", "onnx"))
    assert bundle.config.quantization == "int8"
    assert bundle.config.name == "tiny-tc-int8"
    result = InProcessPipeline(bundle).predict(["Florida has nice beaches"], params={"top_k": None})
    assert sorted(label["label"] for label in result[0]["labels"]) == ["NEGATIVE", "NEUTRAL", "POSITIVE"]


def test_int8_refuses_tasks_without_a_gate(tiny_bundles) -> None:
    exported = tiny_bundles[("fill-mask", "bert")]
    with pytest.raises(ExportError, match=r"no quality gate for task 'fill-mask'"):
        export_bundle(exported.source_uri, quantize="int8", show_progress=False)


def serve_model(bundle_dir: Path, *flags: str) -> tuple[int, str, str]:
    """`splitserve serve-model` in a fresh process: (exit code, its ready line or '', stderr). A
    tier that loads is stopped with SIGTERM once it printed its ready line."""
    cmd = [sys.executable, "-m", "splitserve", "serve-model", str(bundle_dir), "--port", "0", *flags]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        ready = proc.stdout.readline()
        if ready:
            proc.terminate()
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    return proc.returncode, ready, err


def int8_bundle_with(local: str, tmp: Path, edit) -> Path:
    """A copy of the int8 bundle at `local` whose serving.json's int8 reference went through
    `edit` (its fingerprint recomputed, as a bundle exported so would have)."""
    from splitserve.core.bundle import ServingConfig

    out = tmp / "bundle"
    shutil.copytree(local, out)
    path = out / "artifacts" / "serving.json"
    config = ServingConfig.from_json(path.read_text())
    edit(config.int8_check)
    config.fingerprint = config.compute_fingerprint()
    path.write_text(config.to_json())
    return out


def test_the_model_tier_repeats_the_int8_gate_on_its_own_cpu(tiny_bundles, tmp_path) -> None:
    """An int8 bundle carries its gate's inputs and the fp32 graph's answers; the model tier runs
    its int8 graph on them at start-up on the CPU it serves on: it serves when the gate holds
    there, and otherwise refuses in one line naming the gate, the metric and the CPU's features
    (or, with --int8-check warn, serves and says so). A bundle whose reference another CPU's
    answers would not match is made here by shuffling the recorded fp32 vectors."""
    import mlflow

    from splitserve.core.quality import pack

    source = tiny_bundles[("feature-extraction", "bert")].source_uri
    local = mlflow.artifacts.download_artifacts(
        export_bundle(source, quantize="int8", quality_thresholds=TINY_RANKING, show_progress=False)
    )
    bundle = load_bundle(local, ("tokenizer", "onnx"))
    check = bundle.config.int8_check
    assert check is not None and check.gate == ["min_cosine", "mean_cosine", "top1_agreement"]
    assert check.export_cpu == list(cpu.cpu_features())
    assert sum(len(b) for b in check.batches) == GATE_SIZE and unpack(check.reference).shape[0] == GATE_SIZE
    assert check.export_metrics["int8_top1_agreement"] == bundle.config.parity["int8_top1_agreement"]
    InProcessPipeline(bundle)  # the pyfunc's path runs the same check, and it passes here

    code, ready, err = serve_model(Path(local))
    assert ready and json.loads(ready)["tier"] == "model", err[-2000:]

    def shuffled(reference) -> None:
        vectors = unpack(reference.reference)
        reference.reference = pack(vectors[np.random.default_rng(0).permutation(len(vectors))])

    failing = int8_bundle_with(local, tmp_path, shuffled)
    code, ready, err = serve_model(failing)
    assert code == 1 and not ready
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err[-3000:]
    assert "the int8 graph fails its quality gate on this CPU (" in errors[0]
    assert f"{cpu.describe()}): min_cosine = " in errors[0]
    assert "top1_agreement = " in errors[0] and "--int8-check warn" in errors[0]
    with pytest.raises(Exception, match="fails its quality gate on this CPU"):
        InProcessPipeline(load_bundle(str(failing), ("tokenizer", "onnx")))

    code, ready, err = serve_model(failing, "--int8-check", "warn")
    assert ready and json.loads(ready)["tier"] == "model", err[-2000:]
    assert "fails its quality gate on this CPU" in err and "serving it anyway (--int8-check warn)" in err


@pytest.mark.skipif(
    "avx512_vnni" in cpu.cpu_features() or "avx_vnni" in cpu.cpu_features(),
    reason="u8s8 int8 products saturate only on CPUs without VNNI; this one has it",
)
def test_full_range_int8_weights_saturate_without_vnni_and_the_check_sees_it(tiny_bundles, tmp_path) -> None:
    """What the 7-bit weights prevent, on this CPU's own kernels: the tiny BERT quantized with full
    8-bit weights (the format earlier bundles had, which passes the gate on VNNI CPUs) loses its
    ranking here, and the model tier's start-up check refuses it."""
    import mlflow
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source = tiny_bundles[("feature-extraction", "bert")].source_uri
    local = mlflow.artifacts.download_artifacts(
        export_bundle(source, quantize="int8", quality_thresholds=TINY_RANKING, show_progress=False)
    )
    fp32 = Path(tiny_bundles[("feature-extraction", "bert")].local_dir) / "artifacts" / "onnx" / "model.onnx"
    out = tmp_path / "bundle"
    shutil.copytree(local, out)
    quantize_dynamic(fp32, out / "artifacts" / "onnx" / "model.onnx", per_channel=True, weight_type=QuantType.QInt8)
    from splitserve.core.bundle import ServingConfig, hash_tree

    path = out / "artifacts" / "serving.json"
    config = ServingConfig.from_json(path.read_text())
    config.artifacts["onnx"] = hash_tree(out / "artifacts" / "onnx")
    config.fingerprint = config.compute_fingerprint()
    path.write_text(config.to_json())
    code, ready, err = serve_model(out)
    assert code == 1 and not ready, err[-2000:]
    assert "fails its quality gate on this CPU" in err and "top1_agreement = " in err
