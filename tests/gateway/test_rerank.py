"""Rerank, score, tokenize and decode on the gateway, over plain HTTP (Jina/Cohere `/v1/rerank` and
`/v2/rerank`, TEI `/rerank`, `/tokenize`, `/decode`, vLLM `/score`) and gRPC (the client's
`rerank`, `score`, `tokenize`, `decode`): a tiny cross-encoder logged as a transformers
text-classification pipeline answers `CrossEncoder.predict` (its sigmoid; the logit with
raw_scores) and `transformers.pipeline` on the pairs, the real all-MiniLM-L6-v2 the cosine of `SentenceTransformer.encode`, both within
1e-4; a long document is truncated and flagged; bad requests are refused naming the field. One
stack serves every bundle of the module."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import requests
import transformers

from splitserve.client import Client
from splitserve.errors import InvalidInput
from tests.support.bundles import Exported, log_and_export
from tests.support.stack import Stack

TOL = 1e-4
QUERY = "Where does Angela Merkel work?"
DOCUMENTS = [
    "Angela Merkel works in the chancellery in Berlin.",
    "Florida has nice beaches",
    "The chancellor's office is in Berlin. " * 120,  # past the model's 512 tokens: truncated
    "Élodie vit à Zürich 🗼",
]
LONG = 2


@pytest.fixture(scope="module")
def cross_encoder(mlflow_store, tmp_path_factory) -> Exported:
    """A tiny one-label BERT over (query, document) pairs, logged as a text-classification pipeline."""
    from tests.support.zoo import save_tiny

    model_dir = save_tiny("cross-encoder", "bert", tmp_path_factory.mktemp("cross-encoder"))
    return log_and_export("text-classification", "bert", model_dir, name="tiny-cross-encoder")


@pytest.fixture(scope="module")
def stack(cross_encoder, minilm_bundle, tiny_bundles) -> Any:
    """The cross-encoder (the default model), MiniLM ("minilm"), a three-label classifier ("three")
    and a token classifier ("ner") behind one gateway."""
    others = {
        "minilm": minilm_bundle.local_dir,
        "three": tiny_bundles[("text-classification", "roberta")].local_dir,
        "ner": tiny_bundles[("token-classification", "bert")].local_dir,
    }
    more = {"bundle": [f"{name}={uri}" for name, uri in others.items()]}
    with Stack(cross_encoder.local_dir, pre=more, model=more, post=more, gateway={"rest_port": 0}) as running:
        yield running


def post(stack: Stack, path: str, body: dict[str, Any], status: int = 200) -> Any:
    response = requests.post(f"{stack.rest}{path}", json=body, timeout=60)
    assert response.status_code == status, response.text
    return response.json()


def error(stack: Stack, path: str, body: dict[str, Any], status: int = 400) -> str:
    """The error's message, in the route's server's shape: TEI's or OpenAI's (as vLLM answers)."""
    answer = post(stack, path, body, status)
    if path in ("/rerank", "/tokenize", "/decode"):
        assert answer["error_type"] == ("validation" if status == 400 else "backend")
        return answer["error"]
    assert answer["error"]["type"] == "invalid_request_error"
    return answer["error"]["message"]


def test_cross_encoder_scores_as_crossencoder_predict(stack, cross_encoder) -> None:
    import torch
    from sentence_transformers import CrossEncoder

    ce = CrossEncoder(str(cross_encoder.model_dir), device="cpu")
    pairs = [(QUERY, d) for d in DOCUMENTS]
    want = ce.predict(pairs)  # sigmoid of the one logit
    raw = ce.predict(pairs, activation_fn=torch.nn.Identity())
    order = [int(i) for i in np.argsort(-want, kind="stable")]
    # transformers' pipeline on the pairs agrees. (MLflow's pyfunc of the logged pipeline is no oracle
    # here: its string signature drops `text_pair`, scoring the query alone.)
    pipe = transformers.pipeline("text-classification", model=str(cross_encoder.model_dir), device="cpu")
    piped = pipe([{"text": a, "text_pair": b} for a, b in pairs], top_k=None, truncation=True)
    np.testing.assert_allclose([p[0]["score"] for p in piped], want, atol=TOL)
    tokenizer = transformers.AutoTokenizer.from_pretrained(cross_encoder.model_dir)
    assert len(tokenizer(QUERY, DOCUMENTS[LONG]).input_ids) > ce.max_seq_length == 512

    for path in ("/v1/rerank", "/v2/rerank"):  # Jina / Cohere
        answer = post(stack, path, {"query": QUERY, "documents": DOCUMENTS})
        results = answer["results"]
        assert [r["index"] for r in results] == order and "document" not in results[0]
        for r in results:
            assert abs(r["relevance_score"] - want[r["index"]]) <= TOL
            assert r["truncated"] == (r["index"] == LONG)
        assert answer["usage"]["total_tokens"] > 512
        cohere = {"query": QUERY, "documents": [{"text": d} for d in DOCUMENTS], "top_n": 2, "return_documents": True}
        top = post(stack, path, cohere)["results"]
        assert [r["index"] for r in top] == order[:2]
        assert [r["document"] for r in top] == [{"text": DOCUMENTS[i]} for i in order[:2]]

    tei = post(stack, "/rerank", {"query": QUERY, "texts": DOCUMENTS, "raw_scores": True, "return_text": True})
    assert [r["index"] for r in tei] == order and [r["text"] for r in tei] == [DOCUMENTS[i] for i in order]
    for r in tei:
        assert abs(r["score"] - raw[r["index"]]) <= TOL and r["truncated"] == (r["index"] == LONG)
    message = error(stack, "/rerank", {"query": QUERY, "texts": DOCUMENTS, "truncate": False})
    assert "record 2" in message and "takes at most 512" in message

    # vLLM's /score: one text_1 against each text_2, and pairs (N:N), in order.
    scored = post(stack, "/score", {"text_1": QUERY, "text_2": DOCUMENTS})
    assert [d["index"] for d in scored["data"]] == [0, 1, 2, 3] and scored["object"] == "list"
    np.testing.assert_allclose([d["score"] for d in scored["data"]], want, atol=TOL)
    pairwise = post(stack, "/v1/score", {"text_1": [DOCUMENTS[1], QUERY], "text_2": [QUERY, DOCUMENTS[1]]})["data"]
    np.testing.assert_allclose([d["score"] for d in pairwise], ce.predict([(DOCUMENTS[1], QUERY), pairs[1]]), atol=TOL)

    with Client(stack.gateway) as client:  # gRPC: the same numbers
        grpc_ranked = client.rerank(QUERY, DOCUMENTS, top_n=3, return_documents=True)
        assert [r["index"] for r in grpc_ranked] == order[:3]
        assert [r["document"] for r in grpc_ranked] == [DOCUMENTS[i] for i in order[:3]]
        np.testing.assert_allclose([r["score"] for r in grpc_ranked], want[order[:3]], atol=TOL)
        grpc_scored = client.score(QUERY, DOCUMENTS, raw_scores=True)
        np.testing.assert_allclose([r["score"] for r in grpc_scored], raw, atol=TOL)
        assert [r["truncated"] for r in grpc_scored] == [i == LONG for i in range(len(DOCUMENTS))]


def test_embedding_model_scores_the_cosine(stack) -> None:
    from sentence_transformers import SentenceTransformer

    from tests.support.zoo.tokenizer import MINILM_DIR

    vectors = SentenceTransformer(MINILM_DIR, device="cpu").encode([QUERY, *DOCUMENTS[:2], DOCUMENTS[3]])
    vectors = vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)
    want = vectors[1:] @ vectors[0]
    docs = [*DOCUMENTS[:2], DOCUMENTS[3]]
    body = {"model": "minilm", "query": QUERY, "documents": docs, "params": {"pooling": "mean"}}
    results = post(stack, "/v1/rerank", body)["results"]
    assert [r["index"] for r in results] == [int(i) for i in np.argsort(-want, kind="stable")]
    for r in results:
        assert abs(r["relevance_score"] - want[r["index"]]) <= TOL and not r["truncated"]
    with Client(stack.gateway) as client:
        grpc_scored = client.score(QUERY, docs, params={"pooling": "mean"}, model="minilm")
        np.testing.assert_allclose([r["score"] for r in grpc_scored], want, atol=TOL)
    # This bundle's pooling is "none" (one vector per token): said so, with the way out.
    assert "pooling 'none'" in error(stack, "/v1/rerank", {**body, "params": {}})


def test_bad_requests_name_the_field(stack) -> None:
    cases = [
        ("/v1/rerank", {"documents": DOCUMENTS}, "field 'query' must be a non-empty string"),
        ("/v1/rerank", {"query": QUERY, "documents": []}, "field 'documents' must be a string or a non-empty list"),
        ("/v1/rerank", {"query": QUERY, "documents": ["a", ""]}, "field 'documents': text 1 is empty"),
        ("/v1/rerank", {"query": QUERY, "documents": ["a", 3]}, "field 'documents': item 1 must be a string"),
        ("/v2/rerank", {"query": QUERY, "documents": DOCUMENTS, "top_n": 0}, "field 'top_n' must be at least 1"),
        ("/v2/rerank", {"query": QUERY, "documents": DOCUMENTS, "rank": 1}, "unknown field(s) ['rank']"),
        ("/rerank", {"query": QUERY}, "field 'texts' must be a string or a non-empty list"),
        ("/score", {"text_1": ["a", "b"], "text_2": ["c", "d", "e"]}, "'text_1' has 2 texts and 'text_2' 3"),
        ("/v1/rerank", {"model": "three", "query": QUERY, "documents": DOCUMENTS}, "has 3 labels; rerank and score"),
        ("/v1/rerank", {"model": "ner", "query": QUERY, "documents": DOCUMENTS}, "cannot rerank or score pairs"),
    ]
    for path, body, expected in cases:
        assert expected in error(stack, path, body), (path, body)
    assert error(stack, "/v1/rerank", {"model": "nope", "query": QUERY, "documents": DOCUMENTS}, 404)
    with Client(stack.gateway) as client:
        with pytest.raises(InvalidInput, match="field 'top_n' must be at least 1"):
            client.rerank(QUERY, DOCUMENTS, top_n=0)
        with pytest.raises(InvalidInput, match="field 'query' is missing or empty"):
            client.rerank("", DOCUMENTS)
        assert len(client.rerank(QUERY, DOCUMENTS[:1])) == 1  # still serving


def test_tokenize_and_decode(stack, cross_encoder) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(cross_encoder.model_dir)
    texts = ["Élodie vit à Zürich 🗼", "Angela Merkel"]
    tokens = post(stack, "/tokenize", {"inputs": texts})
    for text, got in zip(texts, tokens):
        assert [t["id"] for t in got] == tokenizer(text).input_ids
        assert [t["special"] for t in got] == [True] + [False] * (len(got) - 2) + [True]
        assert (got[0]["text"], got[0]["start"], got[-1]["text"]) == ("[CLS]", None, "[SEP]")
        for t in got[1:-1]:
            assert t["text"] == text[t["start"] : t["stop"]] and t["text"]
    plain = post(stack, "/tokenize", {"inputs": texts[1], "add_special_tokens": False})
    assert [[t["id"] for t in one] for one in plain] == [tokenizer(texts[1], add_special_tokens=False).input_ids]

    ids = [t["id"] for t in tokens[0]]
    assert post(stack, "/decode", {"ids": ids}) == [tokenizer.decode(ids, skip_special_tokens=True)]
    assert post(stack, "/decode", {"ids": [ids, ids[:3]], "skip_special_tokens": False}) == [
        tokenizer.decode(ids),
        tokenizer.decode(ids[:3]),
    ]
    vocab = len(tokenizer)
    assert f"token id {vocab} is outside the vocabulary [0, {vocab})" in error(stack, "/decode", {"ids": [1, vocab]})
    assert "field 'ids' must be a non-empty list of token ids" in error(stack, "/decode", {"ids": "1 2"})
    assert "field 'inputs' must be a string" in error(stack, "/tokenize", {"inputs": []})

    with Client(stack.gateway) as client:  # gRPC: the same
        assert client.tokenize(texts) == tokens
        assert client.decode([ids], skip_special_tokens=False) == [tokenizer.decode(ids)]
        assert [t["id"] for t in client.tokenize(["Florida"], model="minilm")[0]] == tokenizer("Florida").input_ids
