"""Parity with the oracle, `transformers.pipeline` on PyTorch, for every task of this release
and two architectures each (WordPiece BERT, byte-level BPE RoBERTa): in process (the pyfunc
path's stages) and through real gRPC servers of every tier behind the gateway."""

from __future__ import annotations

import numpy as np
import pytest
import transformers
from conftest import ARCHS, TASKS
from oracle import PARAMS, TEXTS, assert_matches, pipeline_output
from stack import Stack

from splitserve.client import Client
from splitserve.core.bundle import load_bundle
from splitserve.inprocess import InProcessPipeline


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("task", TASKS)
def test_gateway_and_in_process_match_pipeline(tiny_bundles, task: str, arch: str) -> None:
    exported = tiny_bundles[(task, arch)]
    pipe = transformers.pipeline(task, model=str(exported.model_dir), tokenizer=str(exported.model_dir), device=-1)
    local = InProcessPipeline(load_bundle(exported.local_dir, ("tokenizer", "onnx")))
    records = [{"id": f"r{i}", "text": t} for i, t in enumerate(TEXTS)]
    with Stack(exported.local_dir) as stack, Client(stack.gateway) as client:
        for params in PARAMS[task]:
            via_gateway = client.predict(records, params=params)
            in_process = local.predict(records, params=params)
            assert [r["id"] for r in via_gateway] == [r["id"] for r in records]
            for text, remote, here in zip(TEXTS, via_gateway, in_process, strict=True):
                expected = pipeline_output(task, pipe, text, params)
                where = f"{task}/{arch} params={params} text={text[:30]!r}"
                assert_matches(task, expected, remote, f"gateway {where}")
                assert_matches(task, expected, here, f"in-process {where}")


@pytest.mark.parametrize("arch", ARCHS)
def test_text_pairs_match_pipeline(tiny_bundles, arch: str) -> None:
    exported = tiny_bundles[("text-classification", arch)]
    pipe = transformers.pipeline("text-classification", model=str(exported.model_dir), device=-1)
    pairs = [("Florida has nice beaches", "Ça fait plaisir 😀"), ("東京", "multiple    spaces")]
    with Stack(exported.local_dir) as stack, Client(stack.gateway) as client:
        got = client.predict([{"text": a, "text_pair": b} for a, b in pairs], params={"top_k": None})
    for (a, b), result in zip(pairs, got, strict=True):
        expected = {"labels": pipe({"text": a, "text_pair": b}, top_k=None)}
        assert_matches("text-classification", expected, result, f"pair {a!r}/{b!r}")


def test_minilm_matches_sentence_transformers(minilm_bundle) -> None:
    """The real all-MiniLM-L6-v2: mean-pooled, normalized vectors through the gateway match
    sentence-transformers' encode (cosine >= 0.9999)."""
    from sentence_transformers import SentenceTransformer
    from zoo import MINILM_DIR

    sentences = [
        "Abraham Lincoln cut down a cherry tree",
        "Florida has nice beaches",
        "Elon Musk owns Tesla",
        *TEXTS[1:5],
    ]
    reference = SentenceTransformer(MINILM_DIR, device="cpu").encode(sentences, normalize_embeddings=True)
    with Stack(minilm_bundle.bundle_uri) as stack, Client(stack.gateway) as client:
        got = client.predict(sentences, params={"pooling": "mean", "normalize": True})
    for sentence, ref, result in zip(sentences, reference, got, strict=True):
        vec = np.asarray(result["embedding"])
        cosine = float(np.dot(vec, ref) / (np.linalg.norm(vec) * np.linalg.norm(ref)))
        assert cosine >= 0.9999, f"{sentence!r}: cosine {cosine}"
