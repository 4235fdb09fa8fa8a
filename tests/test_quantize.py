"""int8 export: a dynamically quantized ONNX graph replaces the fp32 one in the bundle, only
when it keeps the fp32 graph's quality on sample texts (the export's quality gate)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from splitserve.core.bundle import load_bundle
from splitserve.core.errors import ExportError
from splitserve.export import DEFAULT_QUALITY_THRESHOLDS, export_bundle
from splitserve.inprocess import InProcessPipeline

# Dynamic int8 (per-tensor uint8 activations, per-channel int8 weights) of all-MiniLM-L6-v2 keeps
# a mean cosine of about 0.99 over the gate's ~60 texts, but the lowest one (short texts such as
# "ok" or "Why?") is about 0.96 on an AVX2 CPU: the default gate is min 0.95 / mean 0.98, and
# this test names the floor it checks explicitly.
MINILM_MIN_COSINE = 0.95

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
        quality_thresholds={"min_cosine": MINILM_MIN_COSINE},
        show_progress=False,
    )
    local = mlflow.artifacts.download_artifacts(uri)
    config = json.loads((Path(local) / "artifacts" / "serving.json").read_text())
    assert config["quantization"] == "int8"
    assert config["onnx_file"] == "model.onnx"
    assert config["name"] == "minilm-int8"
    fp32_size, int8_size = onnx_size(minilm_bundle.local_dir), onnx_size(local)
    print(f"\nMiniLM ONNX: fp32 {fp32_size / 1e6:.1f} MB, int8 {int8_size / 1e6:.1f} MB")
    assert int8_size < 0.3 * fp32_size

    metrics = run_metrics(uri)
    print({k: round(v, 5) for k, v in sorted(metrics.items())})
    assert metrics["int8_min_cosine"] >= MINILM_MIN_COSINE
    assert metrics["int8_min_cosine_threshold"] == MINILM_MIN_COSINE
    assert metrics["int8_mean_cosine"] >= 0.98
    assert metrics["parity_max_abs_diff"] < 1e-4  # the fp32 graph, checked against PyTorch before quantizing
    assert config["parity"]["int8_min_cosine"] == pytest.approx(metrics["int8_min_cosine"])

    # In process, the int8 bundle keeps what the gate promises on other sentences too. Not a
    # ranking: neighbours whose similarities are close swap on CPUs whose int8 kernels differ
    # (seen on AVX-512 VNNI: two fp32 similarities 0.0207 apart), and dynamic quantization's
    # activation scales depend on which rows run together.
    fp32, int8 = mean_pooled(minilm_bundle.local_dir), mean_pooled(local)
    cosines = (fp32 * int8).sum(1)
    print("in-process cosine int8 vs fp32:", np.round(cosines, 4))
    assert cosines.min() >= MINILM_MIN_COSINE, cosines
    assert cosines.mean() >= DEFAULT_QUALITY_THRESHOLDS["mean_cosine"], cosines


def test_impossible_thresholds_fail_the_export(tiny_bundles) -> None:
    source = tiny_bundles[("feature-extraction", "bert")].source_uri
    with pytest.raises(ExportError, match=r"top1_agreement = [01]\.\d+ < threshold 1\.01 \(nearest-neighbour"):
        export_bundle(source, quantize="int8", quality_thresholds={"top1_agreement": 1.01}, show_progress=False)
    with pytest.raises(ExportError, match=r"min_cosine = 0\.\d+ < threshold 1\.0000001"):
        export_bundle(source, quantize="int8", quality_thresholds={"min_cosine": 1.0000001}, show_progress=False)
    source = tiny_bundles[("token-classification", "bert")].source_uri
    with pytest.raises(ExportError, match=r"label_agreement = [01]\.\d+ < threshold 1\.01"):
        export_bundle(source, quantize="int8", quality_thresholds={"label_agreement": 1.01}, show_progress=False)


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
    assert metrics["int8_label_count"] == 59  # SAMPLE_TEXTS + QUALITY_TEXTS, one label each
    bundle = load_bundle(uri, ("tokenizer", "onnx"))
    assert bundle.config.quantization == "int8"
    assert bundle.config.name == "tiny-tc-int8"
    result = InProcessPipeline(bundle).predict(["Florida has nice beaches"], params={"top_k": None})
    assert sorted(label["label"] for label in result[0]["labels"]) == ["NEGATIVE", "NEUTRAL", "POSITIVE"]


def test_int8_refuses_tasks_without_a_gate(tiny_bundles) -> None:
    exported = tiny_bundles[("fill-mask", "bert")]
    with pytest.raises(ExportError, match=r"no quality gate for task 'fill-mask'"):
        export_bundle(exported.source_uri, quantize="int8", show_progress=False)


def test_top1_agreement_sees_a_broken_ranking() -> None:
    """The ranking metric: 1 when int8 keeps every text's nearest neighbour, low when it does not."""
    from splitserve.export.quantize import top1_agreement

    rng = np.random.default_rng(0)
    a = rng.standard_normal((40, 16))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    noisy = a + 1e-4 * rng.standard_normal(a.shape)
    assert top1_agreement(a, noisy / np.linalg.norm(noisy, axis=1, keepdims=True)) == 1.0
    shuffled = a[rng.permutation(40)]
    assert top1_agreement(a, shuffled) < 0.2
