"""Models logged with MLflow's `sentence_transformers` flavor as a source: the stack's pooling (every
mode), Dense layers, Normalize, truncate_dim, maximum length and default prompt become the
bundle's; the gateway and the bundle's pyfunc answer `SentenceTransformer.encode` (and MLflow's
pyfunc of the source) within 1e-4; stacks the bundle cannot compute exactly are refused naming
the module or setting."""

from __future__ import annotations

from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
import openai
import pytest

from splitserve.client import Client
from splitserve.commands.log import source_requirements
from splitserve.core.bundle import load_bundle
from splitserve.core.errors import ExportError, InvalidInput
from splitserve.export import export_bundle
from tests.support.cli import one_error_line, run
from tests.support.oracle import TEXTS
from tests.support.stack import Stack
from tests.support.zoo import MINILM_DIR, save_tiny

TOL = 1e-4


def log(st, signature=None) -> str:
    with mlflow.start_run():
        info = mlflow.sentence_transformers.log_model(
            st, name="st", signature=signature, pip_requirements=source_requirements()
        )
    return info.model_uri


def served(bundle_uri: str, texts: list[str], requests: tuple[dict, ...] = ({},)) -> list[dict[str, np.ndarray]]:
    """The embeddings through every tier (gateway) and through the bundle's pyfunc, for each of
    `requests` (their params), from one stack."""
    local = mlflow.artifacts.download_artifacts(bundle_uri)
    pyfunc = mlflow.pyfunc.load_model(local)
    answers = []
    with Stack(local) as stack, Client(stack.gateway) as client:
        for params in requests:
            gateway = [r["embedding"] for r in client.predict(texts, params=params or None)]
            frame = pyfunc.predict(texts, params=params or None)
            answers.append({"gateway": np.asarray(gateway), "pyfunc": np.asarray(frame["embedding"].tolist())})
    return answers


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
    for path, got in served(bundle, TEXTS)[0].items():
        assert_close(got, want, path)

    # The official openai client on the gateway's /v1/embeddings, with and without `dimensions`
    # (encode's truncate_dim then normalize_embeddings).
    with Stack(mlflow.artifacts.download_artifacts(bundle), gateway={"rest_port": 0}) as stack:
        api = openai.OpenAI(base_url=f"{stack.rest}/v1", api_key="unused", max_retries=0, timeout=60)
        whole = api.embeddings.create(model="minilm-st", input=TEXTS)
        cut = api.embeddings.create(model="minilm-st", input=TEXTS, dimensions=64)
    assert_close(np.asarray([d.embedding for d in whole.data]), want, "OpenAI /v1/embeddings")
    want_cut = st.encode(TEXTS, truncate_dim=64, normalize_embeddings=True)
    assert_close(np.asarray([d.embedding for d in cut.data]), want_cut, "OpenAI /v1/embeddings, dimensions 64")


def test_prompts_and_cls_pooling(mlflow_store, tmp_path: Path) -> None:
    """A tiny stack with CLS pooling, no Normalize, a default prompt ("query: " before every text)
    and another named prompt: the default becomes the bundle's prompt template, and a request's
    `prompt_name` picks the other as encode's `prompt_name` does (and MLflow's pyfunc of the
    source, which passes its params to encode); a name the model lacks is INVALID_ARGUMENT."""
    from sentence_transformers import SentenceTransformer, models

    model_dir = save_tiny("feature-extraction", "bert", tmp_path)
    transformer = models.Transformer(str(model_dir), max_seq_length=48)
    pooling = models.Pooling(transformer.get_word_embedding_dimension(), pooling_mode="cls")
    prompts = {"query": "query: ", "doc": "passage: "}
    st = SentenceTransformer(modules=[transformer, pooling], prompts=prompts, default_prompt_name="query", device="cpu")
    # MLflow's pyfunc passes only the params its signature declares to encode.
    signature = mlflow.models.infer_signature(TEXTS, st.encode(TEXTS), params={"prompt_name": "query"})
    source = log(st, signature)
    bundle = export_bundle(source, name="tiny-st", show_progress=False)
    config = load_bundle(bundle).config
    assert (config.defaults, config.prompt_template, config.prompts, config.max_length) == (
        {"pooling": "cls", "normalize": False, "prompt_name": "query"},
        "query: {prompt}",
        st.prompts,  # sentence-transformers adds its own empty "document" prompt
        48,
    )
    want = st.encode(TEXTS)
    assert not np.allclose(want, SentenceTransformer(modules=[transformer, pooling], device="cpu").encode(TEXTS))
    doc = st.encode(TEXTS, prompt_name="doc")
    mlflow_doc = mlflow.pyfunc.load_model(source).predict(TEXTS, params={"prompt_name": "doc"})
    assert_close(np.asarray(mlflow_doc), doc, "MLflow's pyfunc of the source, prompt_name 'doc'")
    for answer, expected in zip(served(bundle, TEXTS, ({}, {"prompt_name": "doc"})), (want, doc), strict=True):
        for path, got in answer.items():
            assert_close(got, expected, path)
    with pytest.raises(
        InvalidInput, match=r"param 'prompt_name' is 'passage'; this model's prompts are \['doc', 'document', 'query'\]"
    ):
        mlflow.pyfunc.load_model(mlflow.artifacts.download_artifacts(bundle)).predict(
            TEXTS, params={"prompt_name": "passage"}
        )


def test_every_pooling_mode_through_dense_layers_and_truncate_dim(mlflow_store, tmp_path: Path) -> None:
    """One export of a stack with every module splitserve honours after the Transformer (Pooling
    lasttoken, Dense with tanh, Dense with identity, Normalize, truncate_dim): its default answer is
    encode's and MLflow's pyfunc's (cut after Normalize, not renormalized); each other pooling mode,
    asked per request, answers as the same stack with that Pooling does; `normalize` is encode's
    normalize_embeddings (after the cut)."""
    import torch
    from sentence_transformers import SentenceTransformer, models

    transformer = models.Transformer(str(save_tiny("feature-extraction", "bert", tmp_path)), max_seq_length=40)
    width = transformer.get_embedding_dimension()
    torch.manual_seed(0)
    tanh = models.Dense(width, 24, activation_function=torch.nn.Tanh())
    identity = models.Dense(24, 16, bias=False, activation_function=torch.nn.Identity())

    def stack(mode: str) -> SentenceTransformer:
        pooling = models.Pooling(width, pooling_mode=mode)
        return SentenceTransformer(
            modules=[transformer, pooling, tanh, identity, models.Normalize()], truncate_dim=12, device="cpu"
        )

    source = log(stack("lasttoken"))
    bundle = export_bundle(source, name="st-dense", show_progress=False)
    config = load_bundle(bundle).config
    assert config.defaults == {"pooling": "lasttoken", "normalize": False, "dimensions": 12}
    assert config.head == {
        "dense": [{"activation": "tanh", "in": width, "out": 24}, {"activation": "identity", "in": 24, "out": 16}],
        "normalize": True,
    }
    modes = ("mean", "cls", "max", "mean_sqrt_len_tokens", "weightedmean")
    requests = ({}, {"normalize": True}, *({"pooling": mode} for mode in modes))
    answers = served(bundle, TEXTS, requests)
    want = stack("lasttoken").encode(TEXTS)
    assert want.shape == (len(TEXTS), 12) and not np.allclose(np.linalg.norm(want, axis=1), 1.0)
    assert_close(np.asarray(mlflow.pyfunc.load_model(source).predict(TEXTS)), want, "MLflow's pyfunc of the source")
    wants = [want, stack("lasttoken").encode(TEXTS, normalize_embeddings=True)]
    wants += [stack(mode).encode(TEXTS) for mode in modes]
    for params, answer, expected in zip(requests, answers, wants, strict=True):
        for path, got in answer.items():
            assert_close(got, expected, f"{path} {params}")


def test_pooling_modes_with_left_padding() -> None:
    """Each pooling mode in numpy (the model tier's) against sentence-transformers' own Pooling
    module, on rows padded on the left and on the right (lasttoken takes the last real token,
    cls and weightedmean start at the first)."""
    import torch
    from sentence_transformers import models

    from splitserve.core.pooling import POOLINGS, pool

    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(3, 7, 5)).astype(np.float32)
    right = np.array([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0]])
    for mask in (right, right[:, ::-1].copy()):
        features = {"token_embeddings": torch.tensor(hidden), "attention_mask": torch.tensor(mask)}
        for mode in POOLINGS:
            want = models.Pooling(5, pooling_mode=mode)(dict(features))["sentence_embedding"].numpy()
            np.testing.assert_allclose(pool(hidden, mask, mode, False), want, atol=1e-6, err_msg=mode)


def test_stacks_it_cannot_compute_are_refused(mlflow_store, tmp_path: Path) -> None:
    import torch
    from sentence_transformers import SentenceTransformer, models

    model_dir = save_tiny("feature-extraction", "bert", tmp_path)
    transformer = models.Transformer(str(model_dir))
    width = transformer.get_word_embedding_dimension()
    gelu = models.Dense(width, 8, activation_function=torch.nn.GELU())
    dense = SentenceTransformer(modules=[transformer, models.Pooling(width), gelu], device="cpu")
    # From the CLI, on the models:/ URI MLflow gave: one line naming the module and its activation.
    one_error_line(run("export", log(dense), timeout=300), "Dense layer (module 2) has activation 'gelu'")
    both = SentenceTransformer(modules=[transformer, models.Pooling(width, pooling_mode=("mean", "max"))], device="cpu")
    with pytest.raises(ExportError, match=r"pools with \('mean', 'max'\); splitserve pools with one of"):
        export_bundle(log(both), show_progress=False)
    # A signature param MLflow's pyfunc would pass to encode and the bundle cannot honour.
    plain = SentenceTransformer(modules=[transformer, models.Pooling(width)], device="cpu")
    signature = mlflow.models.infer_signature(TEXTS, plain.encode(TEXTS), params={"precision": "int8"})
    with pytest.raises(ExportError, match=r"signature sets \['precision'\], which splitserve cannot honour"):
        export_bundle(log(plain, signature), show_progress=False)


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
