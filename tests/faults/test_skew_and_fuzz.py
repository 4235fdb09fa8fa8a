"""Tiers from another bundle behind the same gateway (a rolling update gone wrong): refused, never
mixed. Fuzzed requests to the gateway and to the model tier's ModelInfer: no INTERNAL or UNKNOWN for
bad input, no replica lost, the stack still serving afterwards."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from protos import grpc_predict_v2_pb2 as oip
from protos import grpc_predict_v2_pb2_grpc as oip_grpc
from protos import splitserve_pb2 as pb
from protos import splitserve_pb2_grpc as pb_grpc
from splitserve.client import Client
from splitserve.core import codec
from splitserve.core.bundle import ServingConfig
from tests.faults.kit import PARAMS, TEXTS, figure

FUZZ = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck), print_blob=True
)
ALLOWED = {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED"}


def serve(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "splitserve", *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, f"{args[0]} exited"
    return proc, json.loads(line)["address"]


def test_version_skew_is_refused_never_mixed(stack, minilm_bundle, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(minilm_bundle.local_dir, other)
    config_file = other / "artifacts" / "serving.json"
    config = ServingConfig.from_json(config_file.read_text())
    config.defaults = {**config.defaults, "normalize": True}  # the same graph, another bundle
    config.fingerprint = config.compute_fingerprint()
    config_file.write_text(config.to_json())
    procs = []
    try:
        # On Unix-domain sockets, as `up`'s replicas listen (a tier's replicas are all sockets or all TCP).
        model, model_at = serve(
            "serve-model", str(other), "--intra-op-threads", "1", "--host", f"unix:{tmp_path}/m.sock"
        )
        post, post_at = serve("serve-postprocess", str(other), "--host", f"unix:{tmp_path}/p.sock")
        procs += [model, post]
        gateway, gateway_at = serve(
            "serve-gateway",
            "--model", model_at, stack.addresses["model"][0],
            "--postprocess", post_at, stack.addresses["postprocess"][0],
            "--preprocess", *stack.addresses["preprocess"],
        )  # fmt: skip
        procs.append(gateway)
        outcomes: Counter[str] = Counter()
        with Client(gateway_at, timeout_s=30) as client:
            for i in range(40):
                texts = [TEXTS[i % len(TEXTS)]]
                try:
                    outcomes["right" if stack.check(client.predict(texts, params=PARAMS), texts) else "wrong"] += 1
                except grpc.RpcError as exc:
                    outcomes[exc.code().name] += 1
                    assert "bundle mismatch" in exc.details()
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    figure(f"version skew (one model and one postprocess replica of another bundle): {dict(outcomes)}")
    # The gateway pins requests to a version every replica it asked holds: none here, so every
    # request is refused (had its asks seen only one replica of a tier, the other replica's refusals
    # would be retried on it instead, and every answer would be right); never a mixed answer.
    assert outcomes["wrong"] == 0 and set(outcomes) <= {"right", "FAILED_PRECONDITION"}
    assert sum(outcomes.values()) == 40


texts = st.one_of(
    st.text(min_size=1, max_size=40), st.sampled_from(["", " ", "\x00", "a" * 5000, "[MASK] [SEP]", "é" * 300])
)
values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=30)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=8,
)
params = st.one_of(
    st.just({}),
    st.fixed_dictionaries(
        {}, optional={"pooling": st.sampled_from(["mean", "cls", "none", "max"]), "normalize": values}
    ),
    st.dictionaries(st.sampled_from(["pooling", "normalize", "truncation", "max_length", "top_k"]), values, max_size=3),
    st.dictionaries(st.text(max_size=12), values, max_size=3),
)
record = st.fixed_dictionaries(
    {"text": texts},
    optional={
        "id": st.text(max_size=20),
        "text_pair": texts,
        "question": texts,
        "candidate_labels": st.lists(st.text(max_size=10), max_size=3),
    },
)
records = st.one_of(
    st.lists(st.fixed_dictionaries({"text": texts}), min_size=1, max_size=6), st.lists(record, max_size=6)
)


def _gateway_request(recs: list[dict], params: dict) -> pb.PredictRequest | None:
    try:
        return pb.PredictRequest(records=[pb.Record(**r) for r in recs], params=codec.params_to_struct(params))
    except (ValueError, TypeError):  # what protobuf itself refuses to build (e.g. lone surrogates)
        return None


def test_fuzz_gateway(stack) -> None:
    pids = {p.pid for ps in stack.processes().values() for p in ps}
    seen: Counter[str] = Counter()
    with grpc.insecure_channel(stack.addresses["gateway"]) as channel:
        predict = pb_grpc.GatewayStub(channel).Predict
        raw = channel.unary_unary("/splitserve.v1.Gateway/Predict", request_serializer=None, response_deserializer=None)

        @seed(11)
        @FUZZ
        @given(records, params, st.binary(max_size=64))
        def one(recs: list[dict], params: dict, junk: bytes) -> None:
            request = _gateway_request(recs, params)
            calls = [lambda: predict(request, timeout=30)] if request is not None else []
            calls.append(lambda: raw(junk, timeout=30))
            for call in calls:
                try:
                    call()
                    code = "OK"
                except grpc.RpcError as exc:
                    code = exc.code().name
                    assert code in ALLOWED, (code, exc.details(), recs, params)
                seen[code] += 1

        one()
    figure(f"fuzz, gateway Predict: {sum(seen.values())} requests, {dict(seen)}")
    _still_serving(stack, pids)


INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
datatypes = st.sampled_from(["INT32", "FP32", "BOOL", "BYTES", "FP16", "UINT64", "nope"])


MUTATIONS = ("name", "version", "datatype", "shape", "bytes", "raw", "twice", "extra", "value", "parameter")


@st.composite
def infer_requests(draw: st.DrawFn) -> oip.ModelInferRequest:
    """A valid request, then up to three things wrong with it (its model, a tensor's type, shape,
    bytes or values, a parameter), so that the fuzz reaches every check, the tensors' own included."""
    rows, length = draw(st.integers(1, 4)), draw(st.integers(1, 24))
    ids = np.asarray(draw(st.lists(st.integers(0, 30521), min_size=rows * length, max_size=rows * length)))
    arrays = {"input_ids": ids.reshape(rows, length), "attention_mask": np.ones((rows, length), np.int64)}
    arrays["token_type_ids"] = np.zeros((rows, length), np.int64)
    request = oip.ModelInferRequest(model_name="all-MiniLM-L6-v2")
    for name in draw(st.permutations(INPUTS)):
        request.inputs.add(name=name, datatype="INT64", shape=[rows, length])
        request.raw_input_contents.append(arrays[name].astype("<i8").tobytes())
    for mutation in draw(st.lists(st.sampled_from(MUTATIONS), max_size=3)):
        i = draw(st.integers(0, len(request.inputs) - 1)) if request.inputs else 0
        if mutation == "name":
            request.model_name = draw(st.sampled_from(["", "other", "x" * 10_000]))
        elif mutation == "version":
            request.model_version = draw(st.sampled_from(["0" * 32, "x" * 10_000]))
        elif mutation == "datatype" and request.inputs:
            request.inputs[i].datatype = draw(datatypes)
        elif mutation == "shape" and request.inputs:
            del request.inputs[i].shape[:]
            request.inputs[i].shape.extend(draw(st.lists(st.integers(-(2**62), 2**62), max_size=9)))
        elif mutation == "bytes" and request.raw_input_contents:
            request.raw_input_contents[min(i, len(request.raw_input_contents) - 1)] = draw(st.binary(max_size=64))
        elif mutation == "raw" and request.raw_input_contents:
            del request.raw_input_contents[-1]
        elif mutation == "twice" and request.inputs and i < len(request.raw_input_contents):
            request.inputs.add().CopyFrom(request.inputs[i])
            request.raw_input_contents.append(request.raw_input_contents[i])
        elif mutation == "extra":
            request.inputs.add(name=draw(st.text(max_size=12)), datatype="INT64", shape=[rows, length])
            request.raw_input_contents.append(np.zeros((rows, length), np.int64).tobytes())
        elif mutation == "value" and request.inputs:
            name = request.inputs[i].name
            if name in arrays and i < len(request.raw_input_contents):  # an earlier mutation may have dropped it
                bad = arrays[name].copy()
                bad[draw(st.integers(0, rows - 1)), draw(st.integers(0, length - 1))] = draw(
                    st.sampled_from([-1, 2, 7, 30522, 2**40, -(2**63)])
                )
                request.raw_input_contents[i] = bad.astype("<i8").tobytes()
        elif mutation == "parameter":
            request.parameters[draw(st.text(max_size=10))].int64_param = draw(st.integers(-5, 5))
    return request


def test_fuzz_model_tier(stack) -> None:
    pids = {p.pid for ps in stack.processes().values() for p in ps}
    seen: Counter[str] = Counter()
    with grpc.insecure_channel(stack.addresses["model"][0]) as channel:
        infer = oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer

        @seed(11)
        @FUZZ
        @given(infer_requests())
        def one(request: oip.ModelInferRequest) -> None:
            try:
                infer(request, timeout=30)
                code = "OK"
            except grpc.RpcError as exc:
                code = exc.code().name
                assert code in ALLOWED, (code, exc.details(), request)
            seen[code] += 1

        one()
    figure(f"fuzz, model tier ModelInfer: {sum(seen.values())} requests, {dict(seen)}")
    _still_serving(stack, pids)


def _still_serving(stack, pids: set[int]) -> None:
    now = {p.pid for ps in stack.processes().values() for p in ps}
    assert now == pids, "a replica died (and was restarted) during the fuzz"
    with Client(stack.addresses["gateway"]) as client:
        assert stack.check(client.predict(TEXTS[:2], params=PARAMS), TEXTS[:2])


@pytest.fixture(autouse=True)
def _serving(stack):
    stack.wait_serving()
