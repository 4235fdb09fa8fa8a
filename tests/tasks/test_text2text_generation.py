"""text2text-generation, summarization and translation (encoder-decoders) through every tier:
Optimum's encoder graph runs once per prompt, the merged decoder graph with past key values runs
the decoding loop in the model tier (and PyTorch does, on the torch backend). Checked against the
oracle, the task's `transformers.pipeline` on PyTorch: token ids and texts exactly equal for
greedy decoding and beam search, on a tiny T5 (WordPiece tokenizer, relative positions, T5's
translation `prefix`) and a tiny BART (byte-level BPE, forced eos)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import grpc
import mlflow
import pytest
import transformers
from stack import Stack

from splitserve.client import Client
from splitserve.core.bundle import load_bundle
from splitserve.inprocess import InProcessPipeline

TEXTS = [
    "Angela Merkel works for the government in Berlin.",
    "Élodie vit à Zürich 🗼",
    "東京タワーに行きました",
    "They cut down a cherry tree near Paris, said the gardener.",
]
LIMIT = 24
# (bundle key, model arch, MLflow task)
CASES = [
    ("t5-text2text", "t5", "text2text-generation"),
    ("bart-summarization", "bart", "summarization"),
    ("t5-translation", "t5", "translation_en_to_fr"),
]
# The pipelines' own output field for each task.
FIELD = {"text2text-generation": "generated", "summarization": "summary", "translation_en_to_fr": "translation"}


@dataclass
class S2SBundle:
    model_dir: Path
    task: str
    local_dir: str


@pytest.fixture(scope="module")
def s2s_bundles(mlflow_store, tmp_path_factory) -> dict[str, S2SBundle]:
    from zoo import save_tiny_seq2seq

    from splitserve.export import export_bundle
    from splitserve.source import log_pipeline

    out = {}
    for key, arch, task in CASES:
        prefix_task = task if task.startswith("translation") else None
        model_dir = save_tiny_seq2seq(arch, tmp_path_factory.mktemp(key), prefix_task=prefix_task)
        source = log_pipeline(model_dir, task, None)
        uri = export_bundle(source, name=f"tiny-{key}", show_progress=False, max_new_tokens_limit=LIMIT)
        out[key] = S2SBundle(model_dir, task, mlflow.artifacts.download_artifacts(uri))
    return out


def _expected(pipe: transformers.Pipeline, task: str, text: str, **kwargs) -> dict:
    """The pipeline's text and new token ids (its decoder start token dropped) for one text."""
    field = FIELD[task]
    kwargs = {"do_sample": False, **kwargs}
    ids = pipe(text, return_tensors=True, **kwargs)[0][f"{field}_token_ids"]
    return {"generated_text": pipe(text, **kwargs)[0][f"{field}_text"], "token_ids": [int(t) for t in ids[1:]]}


PARAMS = [
    {"max_new_tokens": 12},
    {"max_new_tokens": 10, "num_beams": 3},
    {
        "max_new_tokens": 9,
        "num_beams": 4,
        "length_penalty": 0.5,
        "early_stopping": True,
        "no_repeat_ngram_size": 2,
    },
    {"max_new_tokens": 8, "repetition_penalty": 1.5, "min_new_tokens": 5},
]


@pytest.mark.parametrize("key", [c[0] for c in CASES])
def test_matches_pipeline(s2s_bundles, key: str) -> None:
    bundle = s2s_bundles[key]
    pipe = transformers.pipeline(bundle.task, model=str(bundle.model_dir), tokenizer=str(bundle.model_dir))
    local = InProcessPipeline(load_bundle(bundle.local_dir, ("tokenizer", "onnx")))
    on_torch = InProcessPipeline(load_bundle(bundle.local_dir, ("tokenizer", "onnx")), backend="torch")
    records = [{"id": f"t{i}", "text": t} for i, t in enumerate(TEXTS)]
    with Stack(bundle.local_dir) as stack, Client(stack.gateway) as client:
        for params in PARAMS:
            remote = client.predict(records, params={"do_sample": False, **params})
            here = local.predict(records, params={"do_sample": False, **params})
            torch_here = on_torch.predict(records, params={"do_sample": False, **params})
            for text, r, h, t in zip(TEXTS, remote, here, torch_here, strict=True):
                expected = _expected(pipe, bundle.task, text, **params)
                where = f"{key} {params} {text!r}"
                assert r["generated"] == [expected], where
                assert h["generated"] == [expected], where
                assert t["generated"] == [expected], where
    info = json.loads((Path(bundle.local_dir) / "artifacts" / "serving.json").read_text())
    generation = info["generation"]
    assert generation["architecture"] == "encoder-decoder"
    assert info["onnx_file"] == "decoder_model_merged.onnx"
    # Only the encoder and the merged decoder travel in the bundle, not Optimum's two other decoders.
    assert sorted(p.name for p in (Path(bundle.local_dir) / "artifacts" / "onnx").glob("*.onnx")) == [
        "decoder_model_merged.onnx",
        "encoder_model.onnx",
    ]
    if key == "t5-translation":  # T5's task prefix survives logging and is applied by preprocess
        assert generation["prefix"] == "translate English to French: "
    if key == "bart-summarization":
        assert generation["model_settings"]["forced_eos_token_id"] == [pipe.tokenizer.eos_token_id]


def test_sampling_pyfunc_and_errors(s2s_bundles) -> None:
    """Sampling with a seed is reproducible through the gateway and equals the in-process
    pyfunc's; bad params and a too-long text get INVALID_ARGUMENT naming what was wrong."""
    import mlflow.pyfunc

    bundle = s2s_bundles["bart-summarization"]
    sampled = {"do_sample": True, "seed": 5, "max_new_tokens": 8, "top_k": 20}
    with Stack(bundle.local_dir) as stack, Client(stack.gateway) as client:
        first = client.predict(TEXTS, params=sampled)
        assert client.predict(TEXTS, params=sampled) == first
        assert client.predict(TEXTS, params={**sampled, "seed": 6}) != first
        frame = mlflow.pyfunc.load_model(bundle.local_dir).predict(TEXTS, params=sampled)
        assert frame["generated"].tolist() == [r["generated"] for r in first]
        for params, message in [
            ({"max_new_tokens": LIMIT + 1}, "max_new_tokens"),
            ({"num_beams": 2, "do_sample": True}, "beam sampling"),
            ({"return_full_text": False}, "unknown param"),
        ]:
            with pytest.raises(grpc.RpcError) as err:
                client.predict(TEXTS[:1], params=params)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert message in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            client.predict([{"id": "long", "text": "Paris " * 200}])
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "id='long'" in err.value.details() and "maximum" in err.value.details()
        # The server keeps serving.
        assert client.predict(TEXTS[:1], params=sampled) == first[:1]
        # Streamed: each record's deltas add up to its final text.
        events = list(client.stream(TEXTS, params=sampled))
        assert events[-1] == {"results": first}
        for i, result in enumerate(first):
            streamed = "".join(e["text"] for e in events[:-1] if e["record"] == i)
            assert streamed == result["generated"][0]["generated_text"]
