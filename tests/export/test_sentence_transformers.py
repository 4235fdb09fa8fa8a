"""Models logged with MLflow's `sentence_transformers` flavor as a source: the stack's pooling,
normalization, maximum length and default prompt become the bundle's; the gateway and the
bundle's pyfunc answer `SentenceTransformer.encode` (and MLflow's pyfunc of the source) within
1e-4; stacks the bundle cannot compute exactly are refused naming the module or setting."""

from __future__ import annotations

from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
import pytest

from splitserve.client import Client
from splitserve.commands.log import source_requirements
from splitserve.core.bundle import load_bundle
from splitserve.core.errors import ExportError
from splitserve.export import export_bundle
from tests.support.cli import one_error_line, run
from tests.support.oracle import TEXTS
from tests.support.stack import Stack
from tests.support.zoo import MINILM_DIR, save_tiny

TOL = 1e-4


def log(st) -> str:
    with mlflow.start_run():
        info = mlflow.sentence_transformers.log_model(st, name="st", pip_requirements=source_requirements())
    return info.model_uri


def served(bundle_uri: str, texts: list[str]) -> dict[str, np.ndarray]:
    """The embeddings through every tier (gateway) and through the bundle's pyfunc."""
    local = mlflow.artifacts.download_artifacts(bundle_uri)
    with Stack(local) as stack, Client(stack.gateway) as client:
        gateway = [r["embedding"] for r in client.predict(texts)]
    frame = mlflow.pyfunc.load_model(local).predict(texts)
    return {"gateway": np.asarray(gateway), "pyfunc": np.asarray(frame["embedding"].tolist())}


def assert_close(got: np.ndarray, want: np.ndarray, where: str) -> None:
    assert got.shape == want.shape, f"{where}: shape {got.shape} != {want.shape}"
    diff = float(np.abs(got - want).max())
    assert diff <= TOL, f"{where}: embeddings differ by {diff}"


def test_minilm_as_sentence_transformers_logs_it(mlflow_store) -> None:
    """all-MiniLM-L6-v2 (Transformer, mean Pooling, Normalize; max_seq_length 256), the long text
    truncated where encode truncates it."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(MINILM_DIR, device="cpu")
    source = log(st)
    bundle = export_bundle(source, name="minilm-st", show_progress=False)
    config = load_bundle(bundle).config
    assert config.defaults == {"pooling": "mean", "normalize": True}
    assert config.defaults_from == {"pooling": "sentence-transformers", "normalize": "sentence-transformers"}
    assert config.max_length == 256 and len(TEXTS[-1]) > 1000
    want = st.encode(TEXTS)
    mlflow_answer = np.asarray(mlflow.pyfunc.load_model(source).predict(TEXTS))
    assert_close(mlflow_answer, want, "MLflow's pyfunc of the source")
    for path, got in served(bundle, TEXTS).items():
        assert_close(got, want, path)


def test_a_prompt_and_cls_pooling(mlflow_store, tmp_path: Path) -> None:
    """A tiny stack with CLS pooling, no Normalize and a default prompt ("query: " before every
    text): the prompt becomes the bundle's prompt template."""
    from sentence_transformers import SentenceTransformer, models

    model_dir = save_tiny("feature-extraction", "bert", tmp_path)
    transformer = models.Transformer(str(model_dir), max_seq_length=48)
    pooling = models.Pooling(transformer.get_word_embedding_dimension(), pooling_mode="cls")
    st = SentenceTransformer(
        modules=[transformer, pooling], prompts={"query": "query: "}, default_prompt_name="query", device="cpu"
    )
    bundle = export_bundle(log(st), name="tiny-st", show_progress=False)
    config = load_bundle(bundle).config
    assert (config.defaults, config.prompt_template, config.max_length) == (
        {"pooling": "cls", "normalize": False},
        "query: {prompt}",
        48,
    )
    want = st.encode(TEXTS)
    assert not np.allclose(want, SentenceTransformer(modules=[transformer, pooling], device="cpu").encode(TEXTS))
    for path, got in served(bundle, TEXTS).items():
        assert_close(got, want, path)


def test_stacks_it_cannot_compute_are_refused(mlflow_store, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer, models

    model_dir = save_tiny("feature-extraction", "bert", tmp_path)
    transformer = models.Transformer(str(model_dir))
    width = transformer.get_word_embedding_dimension()
    dense = SentenceTransformer(modules=[transformer, models.Pooling(width), models.Dense(width, 8)], device="cpu")
    # From the CLI, on the models:/ URI MLflow gave: one line naming the module.
    one_error_line(run("export", log(dense), timeout=300), "modules are ['Transformer', 'Pooling', 'Dense']", "Dense")
    maxed = SentenceTransformer(modules=[transformer, models.Pooling(width, pooling_mode="max")], device="cpu")
    with pytest.raises(ExportError, match=r"pools with 'max'; splitserve pools with mean or cls"):
        export_bundle(log(maxed), show_progress=False)


def test_a_cross_encoder_is_refused(mlflow_store, tmp_path: Path) -> None:
    """MLflow's flavor saves a CrossEncoder but loads it back as a SentenceTransformer without its
    classifier (its pyfunc answers the encoder's embeddings, not the pairs' scores): export refuses
    it, naming the way that serves it (a text-classification pipeline: tests/gateway/test_rerank.py)."""
    from sentence_transformers import CrossEncoder, SentenceTransformer

    ce = CrossEncoder(str(save_tiny("cross-encoder", "bert", tmp_path)), device="cpu")
    source = log(ce)
    loaded = mlflow.sentence_transformers.load_model(source)
    assert type(loaded) is SentenceTransformer and [type(m).__name__ for m in loaded] == ["Transformer", "Pooling"]
    with pytest.raises(ExportError, match=r"is a CrossEncoder \(BertForSequenceClassification\) logged with MLflow"):
        export_bundle(source, show_progress=False)
