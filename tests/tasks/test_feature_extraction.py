"""feature-extraction against its oracles: `transformers.pipeline` (token vectors; pooled and
normalized as sentence-transformers does), the real all-MiniLM-L6-v2 against sentence-transformers,
and the bundle's pyfunc against the gateway."""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest

from splitserve.client import Client
from tests.support.bundles import ARCHS
from tests.support.oracle import TEXTS, assert_embedding, check_parity
from tests.support.stack import Stack

TASK = "feature-extraction"
PARAMS: list[dict[str, Any]] = [{}, {"pooling": "mean", "normalize": True}, {"pooling": "cls"}]


def expected(pipe: Any, text: str, params: dict[str, Any]) -> dict[str, Any]:
    tokens = np.asarray(pipe(text, truncation=True)[0], dtype=np.float32)
    pooling = params.get("pooling", "none")
    out = tokens.mean(axis=0) if pooling == "mean" else tokens[0] if pooling == "cls" else tokens
    if params.get("normalize"):
        out = out / max(float(np.linalg.norm(out)), 1e-12)
    return {"embedding": out}


def matches(exp: dict[str, Any], got: dict[str, Any], where: str) -> None:
    assert_embedding(exp["embedding"], got["embedding"], where)


@pytest.mark.parametrize("arch", ARCHS)
def test_gateway_and_in_process_match_pipeline(tiny_bundles, arch: str) -> None:
    check_parity(tiny_bundles[(TASK, arch)], TEXTS, PARAMS, expected, matches)


def test_torch_backend_matches_pipeline(tiny_bundles) -> None:
    check_parity(tiny_bundles[(TASK, "roberta")], TEXTS, PARAMS[:3], expected, matches, backend="torch")


def test_minilm_matches_sentence_transformers(minilm_bundle) -> None:
    """The real all-MiniLM-L6-v2: mean-pooled, normalized vectors through the gateway match
    sentence-transformers' encode (cosine >= 0.9999)."""
    from sentence_transformers import SentenceTransformer

    from tests.support.zoo.tokenizer import MINILM_DIR

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


def test_pyfunc_predict_equals_gateway(tiny_bundles) -> None:
    """`mlflow.pyfunc.load_model(bundle).predict(df)` equals the gateway, keyed by id."""
    exported = tiny_bundles[(TASK, "roberta")]
    ids = [f"id-{i}" for i in range(len(TEXTS))]
    frame = pd.DataFrame({"id": ids, "content": TEXTS})
    params = {"pooling": "mean", "normalize": True}
    scored = mlflow.pyfunc.load_model(exported.bundle_uri).predict(frame, params=params)
    assert list(scored["id"]) == ids
    with Stack(exported.local_dir) as stack, Client(stack.gateway) as client:
        remote = {r["id"]: r for r in client.predict(frame, params=params)}
    for _, row in scored.iterrows():
        np.testing.assert_allclose(np.asarray(row["embedding"]), np.asarray(remote[row["id"]]["embedding"]), atol=1e-6)


def test_the_model_tier_pools(tiny_bundles) -> None:
    """With `pooling`, the model tier answers one vector per row (`pooled`), not every token's, and
    equals what pooling the token vectors gives; bad pooling parameters are refused."""
    import grpc

    from protos import grpc_predict_v2_pb2 as oip
    from protos import grpc_predict_v2_pb2_grpc as oip_grpc
    from splitserve.core.pooling import pool

    exported = tiny_bundles[(TASK, "bert")]
    ids = np.array([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=np.int64)
    mask = (ids != 0).astype(np.int64)

    def request(**parameters) -> oip.ModelInferRequest:
        r = oip.ModelInferRequest(model_name=f"tiny-{TASK}-bert")
        for name, array in (("input_ids", ids), ("attention_mask", mask), ("token_type_ids", np.zeros_like(ids))):
            r.inputs.add(name=name, datatype="INT64", shape=list(array.shape))
            r.raw_input_contents.append(array.tobytes())
        for key, value in parameters.items():
            field = "bool_param" if isinstance(value, bool) else "string_param"
            setattr(r.parameters[key], field, value)
        return r

    def array(response) -> np.ndarray:
        out = response.outputs[0]
        return np.frombuffer(response.raw_output_contents[0], dtype=np.float32).reshape(list(out.shape))

    with Stack(exported.local_dir) as stack, grpc.insecure_channel(stack.addresses["model"]) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        hidden = array(stub.ModelInfer(request()))
        pooled = stub.ModelInfer(request(pooling="mean", normalize=True))
        assert pooled.outputs[0].name == "pooled" and list(pooled.outputs[0].shape) == [2, hidden.shape[-1]]
        np.testing.assert_allclose(array(pooled), pool(hidden, mask, "mean", True), atol=1e-6)
        assert pooled.ByteSize() < stub.ModelInfer(request()).ByteSize() / 2
        for bad, message in (
            ({"pooling": "median"}, "expected one of ['mean', 'cls', 'max', 'lasttoken'"),
            ({"normalize": True}, "needs 'pooling'"),
        ):
            with pytest.raises(grpc.RpcError) as err:
                stub.ModelInfer(request(**bad))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in err.value.details()


def test_torch_backend_in_bfloat16(minilm_bundle) -> None:
    """`--backend torch --dtype bf16`: the real MiniLM in bfloat16 keeps its fp32 sentence vectors
    (cosine >= 0.99; bfloat16 has about three significant digits)."""
    sentences = ["Florida has nice beaches", "Elon Musk owns Tesla", *TEXTS[1:4]]
    params = {"pooling": "mean", "normalize": True}
    with Stack(minilm_bundle.local_dir) as stack, Client(stack.gateway) as client:
        fp32 = np.asarray([r["embedding"] for r in client.predict(sentences, params=params)])
    with (
        Stack(minilm_bundle.local_dir, model={"backend": "torch", "dtype": "bf16"}) as stack,
        Client(stack.gateway) as client,
    ):
        bf16 = np.asarray([r["embedding"] for r in client.predict(sentences, params=params)])
    cosines = (fp32 * bf16).sum(axis=1)
    assert cosines.min() >= 0.99, cosines
    assert not np.allclose(fp32, bf16, atol=1e-6)  # it did run in bfloat16


@pytest.mark.parametrize("arch", ARCHS)
def test_token_ids_answer_as_their_text(tiny_bundles, arch: str) -> None:
    """A record of the model's own token ids (OpenAI's token-id input) answers as its text does,
    alone or beside texts, whatever the tokenizer's pad id; bad ids name the record."""
    import transformers

    from splitserve.core.bundle import load_bundle
    from splitserve.core.errors import InvalidInput
    from splitserve.inprocess import InProcessPipeline

    exported = tiny_bundles[(TASK, arch)]
    tokenizer = transformers.AutoTokenizer.from_pretrained(exported.model_dir)
    local = InProcessPipeline(load_bundle(exported.local_dir, ("tokenizer", "onnx")))
    texts = list(TEXTS[:4])
    ids = [{"id": f"i{k}", "token_ids": tokenizer(t).input_ids} for k, t in enumerate(texts)]
    for params in PARAMS:
        by_text = local.predict(texts, params=params)
        for records in (ids, [texts[0], ids[1], texts[2], ids[3]]):
            for want, got in zip(by_text, local.predict(records, params=params), strict=True):
                assert_embedding(want["embedding"], got["embedding"], f"{arch} params={params}")
    with pytest.raises(InvalidInput, match=r"record 1 \(id='x'\): field 'token_ids' has id -1, outside"):
        local.predict([texts[0], {"id": "x", "token_ids": [0, -1]}])
    with pytest.raises(InvalidInput, match=r"record 0 \(id='0'\): give field 'text' or field 'token_ids', not both"):
        local.predict([{"text": "a", "token_ids": [1, 2]}])
