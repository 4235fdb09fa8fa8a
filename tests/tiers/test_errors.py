"""Bad input gets a precise status and message; the servers keep serving afterwards."""

from __future__ import annotations

import concurrent.futures
import re

import grpc
import numpy as np
import pytest

from protos import grpc_predict_v2_pb2 as oip
from protos import grpc_predict_v2_pb2_grpc as oip_grpc
from protos import splitserve_pb2 as pb
from protos import splitserve_pb2_grpc as pb_grpc
from splitserve.client import Client
from splitserve.core.errors import InvalidInput
from tests.support.stack import Stack

OK_RECORDS = [{"id": "a", "text": "Florida has nice beaches"}]


@pytest.fixture(scope="module")
def stack(tiny_bundles):
    exported = tiny_bundles[("token-classification", "bert")]
    with Stack(
        exported.local_dir,
        pre={"max_records": 8, "max_text_chars": 2000},
        model={"max_queue_delay_ms": 30},  # requests sent together share a batch
        gateway={"max_records": 16},
    ) as s:
        yield s


def expect_error(client: Client, records, code: grpc.StatusCode, details: str, params=None, model: str = "") -> None:
    with pytest.raises(grpc.RpcError) as info:
        client.predict(records, params=params, model=model)
    assert info.value.code() == code, info.value.details()
    assert details in info.value.details()
    # ...and the server keeps serving.
    assert client.predict(OK_RECORDS)[0]["id"] == "a"


@pytest.mark.parametrize(
    ("records", "params", "details"),
    [
        ([], None, "request has no records"),
        ([{"id": "a", "text": "fine"}, {"id": "b7"}], None, "record 1 (id='b7'): field 'text' is missing"),
        ([{"id": "a", "text": "fine"}, {"id": "z", "text": "   "}], None, "record 1 (id='z'): field 'text' is empty"),
        (
            [{"text": "pair", "text_pair": "not here"}],
            None,
            "record 0 (id='0'): field 'text_pair' is not used by this task",
        ),
        (OK_RECORDS, {"pooling": "mean"}, "unknown param(s) ['pooling'] for task token-classification"),
        (OK_RECORDS, {"aggregation_strategy": "loudest"}, "param 'aggregation_strategy': expected one of"),
        (OK_RECORDS, {"ignore_labels": "O"}, "param 'ignore_labels': expected a list of strings"),
        (OK_RECORDS, {"max_length": 100000}, "param 'max_length': 100000 exceeds the model's maximum of 512"),
        (OK_RECORDS, {"truncation": "yes"}, "param 'truncation': expected true or false"),
        (
            [{"id": "big", "text": "word " * 1000}],
            None,
            "record 0 (id='big'): field 'text' has 5000 characters; the limit is 2000",
        ),
        ([f"text {i}" for i in range(9)], None, "request has 9 records; the limit is 8"),
        ([f"text {i}" for i in range(17)], None, "request has 17 records; the limit is 16"),
    ],
)
def test_invalid_argument(stack, records, params, details) -> None:
    with Client(stack.gateway) as client:
        expect_error(client, records, grpc.StatusCode.INVALID_ARGUMENT, details, params=params)


def test_untruncated_long_text_is_refused(stack) -> None:
    with Client(stack.gateway) as client:
        expect_error(
            client,
            [{"id": "long", "text": "a " * 700}],
            grpc.StatusCode.INVALID_ARGUMENT,
            "record 0 (id='long'): field 'text' is 702 tokens long; the model takes at most 512",
            params={"truncation": False},
        )


def test_unknown_model_is_not_found(stack) -> None:
    with Client(stack.gateway) as client:
        expect_error(client, OK_RECORDS, grpc.StatusCode.NOT_FOUND, "model 'nope' is not served here", model="nope")
        assert client.predict(OK_RECORDS, model="tiny-token-classification-bert")[0]["id"] == "a"


def test_non_string_content_is_refused_before_sending(stack) -> None:
    with (
        Client(stack.gateway) as client,
        pytest.raises(InvalidInput, match=r"record 1 \(id='n'\): field 'text' must be a string, got int"),
    ):
        client.predict([{"text": "fine"}, {"id": "n", "content": 42}])


def test_deadline_exceeded(stack) -> None:
    with Client(stack.gateway, timeout_s=0.0005) as client, pytest.raises(grpc.RpcError) as info:
        client.predict(["a text " * 50] * 8)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def _infer_request(ids: np.ndarray, model: str = "tiny-token-classification-bert") -> oip.ModelInferRequest:
    request = oip.ModelInferRequest(model_name=model)
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        array = ids if name == "input_ids" else (np.ones_like(ids) if name == "attention_mask" else np.zeros_like(ids))
        request.inputs.add(name=name, datatype="INT64", shape=list(array.shape))
        request.raw_input_contents.append(array.astype("<i8").tobytes())
    return request


def test_model_tier_errors(stack) -> None:
    with grpc.insecure_channel(stack.addresses["model"]) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        good = _infer_request(np.array([[101, 7592, 102]]))
        assert stub.ModelInfer(good).outputs[0].name == "logits"

        bad = _infer_request(np.array([[101, 7592, 102]]))
        bad.raw_input_contents[0] = b"\x00" * 7
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(bad)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "tensor 'input_ids': 7 bytes do not fit shape [1, 3] of INT64" in info.value.details()

        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(_infer_request(np.array([[101, 102]]), model="other"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND

        pinned = _infer_request(np.array([[101, 102]]))
        pinned.model_version = "0" * 32
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(pinned)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "bundle mismatch" in info.value.details()

        assert stub.ModelInfer(good).outputs[0].name == "logits"


def _with(request: oip.ModelInferRequest, name: str, array: np.ndarray) -> oip.ModelInferRequest:
    names = [t.name for t in request.inputs]
    request.raw_input_contents[names.index(name)] = array.astype("<i8").tobytes()
    return request


@pytest.mark.parametrize(
    ("name", "values", "details"),
    [
        (
            "input_ids",
            [[101, 10**9, 102]],
            "input 'input_ids': row 0, position 1 holds 1000000000; token ids must be in [0, ",
        ),
        ("input_ids", [[101, -5, 102]], "input 'input_ids': row 0, position 1 holds -5; token ids must be in [0, "),
        (
            "attention_mask",
            [[1, 2, 1]],
            "input 'attention_mask': row 0, position 1 holds 2; mask values must be 0 or 1",
        ),
        (
            "token_type_ids",
            [[0, 0, 7]],
            "input 'token_type_ids': row 0, position 2 holds 7; token types must be in [0, 2)",
        ),
    ],
)
def test_model_tier_checks_values_per_request(stack, name, values, details) -> None:
    """Issue 11, defect 2: ids outside the vocabulary (ONNX Runtime failed the whole batch:
    INTERNAL), negative ids (wrapped silently), masks other than 0/1 and token types outside the
    type vocabulary (accepted) are INVALID_ARGUMENT for that request alone; the requests batched
    beside it succeed."""
    bad = _with(_infer_request(np.array([[101, 7592, 102]])), name, np.array(values))
    goods = [_infer_request(np.array([[101, 7592 + i, 102]])) for i in range(6)]
    with grpc.insecure_channel(stack.addresses["model"]) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        calls = [stub.ModelInfer.future(r) for r in (goods[:3] + [bad] + goods[3:])]
        outcomes = []
        for call in calls:
            try:
                outcomes.append(call.result().outputs[0].name)
            except grpc.RpcError as e:
                outcomes.append((e.code(), e.details()))
    assert outcomes[:3] + outcomes[4:] == ["logits"] * 6
    assert outcomes[3][0] == grpc.StatusCode.INVALID_ARGUMENT, outcomes[3]
    assert details in outcomes[3][1]


@pytest.mark.parametrize("contents", ["raw", "typed"])
def test_model_tier_refuses_overflowing_shapes(stack, contents) -> None:
    """Issue 11, defect 4: a shape like [2^32, 2^32] with empty bytes overflowed the size check
    (its product wrapped to 0) and failed later: INTERNAL. Shapes are checked first."""
    request = oip.ModelInferRequest(model_name="tiny-token-classification-bert")
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        request.inputs.add(name=name, datatype="INT64", shape=[2**32, 2**32])
        if contents == "raw":
            request.raw_input_contents.append(b"")
    with grpc.insecure_channel(stack.addresses["model"]) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
        assert "shape [4294967296, 4294967296] is too large" in info.value.details()
        request = oip.ModelInferRequest(model_name="tiny-token-classification-bert")
        request.inputs.add(name="input_ids", datatype="INT64", shape=[1] * 9)
        request.raw_input_contents.append(b"\0" * 8)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
        assert "9 dimensions; at most 8" in info.value.details()
        assert stub.ModelInfer(_infer_request(np.array([[101, 102]]))).outputs[0].name == "logits"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_params_are_invalid_argument(stack, tiny_bundles, value) -> None:
    """Issue 11, defect 3 (fixed by the redesign; checked here from the gateway): NaN or
    +-Infinity in a param (easy to send from pandas) is INVALID_ARGUMENT naming the param."""
    with Client(stack.gateway) as client:
        expect_error(
            client, OK_RECORDS, grpc.StatusCode.INVALID_ARGUMENT, "param 'max_length'", params={"max_length": value}
        )


def test_echoed_values_are_cut_short(stack) -> None:
    """Issue 11, defect 5: messages repeated a record id or a param value whole; past ~8 KiB the
    caller got RESOURCE_EXHAUSTED ("received metadata size exceeds ...") instead of the error."""
    long = "x" * 20_000
    with Client(stack.gateway) as client:
        for records, params, where in (
            ([{"id": long}], None, "record 0 (id='xxxxxxxx"),
            (OK_RECORDS, {"aggregation_strategy": long}, "param 'aggregation_strategy': expected one of"),
            (OK_RECORDS, {long: 1}, "unknown param(s) ['xxxx"),
        ):
            with pytest.raises(grpc.RpcError) as info:
                client.predict(records, params=params)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()[:200]
            assert where in info.value.details() and "…" in info.value.details()
            assert len(info.value.details()) < 1100
    with grpc.insecure_channel(stack.addresses["model"]) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(_infer_request(np.array([[101, 102]]), model=long))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND and len(info.value.details()) < 200


@pytest.mark.parametrize("tier", ["gateway", "model", "preprocess"])
def test_corrupt_protobuf_is_invalid_argument(stack, tier) -> None:
    """Issue 11, defect 13: bytes that do not parse as the request message (corrupt, or a string
    field that is not UTF-8) got UNKNOWN with the parser's message; now INVALID_ARGUMENT."""
    method = {
        "gateway": "/splitserve.v1.Gateway/Predict",
        "model": "/inference.GRPCInferenceService/ModelInfer",
        "preprocess": "/splitserve.v1.Preprocess/Preprocess",
    }[tier]
    bad_utf8 = b"\x0a\x03\xff\xfe\xfd"  # field 1 (a string in each of these messages): not UTF-8
    truncated = b"\x12\x10ab"  # a length past the end
    with grpc.insecure_channel(stack.addresses[tier]) as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        for payload in (bad_utf8, truncated):
            with pytest.raises(grpc.RpcError) as info:
                call(payload, timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (payload, info.value.details())
            assert "is not a valid protobuf message" in info.value.details()
    with Client(stack.gateway) as client:
        assert client.predict(OK_RECORDS)[0]["id"] == "a"


def test_overload_is_refused_early(tiny_bundles) -> None:
    exported = tiny_bundles[("feature-extraction", "bert")]
    with Stack(exported.local_dir, gateway={"max_in_flight": 1}) as stack, Client(stack.gateway) as client:
        records = ["a sentence with some words in it " * 12] * 64
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(client.predict, records) for _ in range(8)]
            codes = []
            for f in futures:
                try:
                    f.result()
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as e:
                    codes.append(e.code())
                    assert "in flight" in e.details()
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
        assert grpc.StatusCode.OK in codes
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}


def test_load_the_model_tier_refused_is_refused_at_the_gateway(tiny_bundles) -> None:
    """Issue 25: a request the gateway admitted and the model tier refused for the work queued
    there waited behind work on the way; the gateway takes that load as its ceiling, so the same
    load is then refused at its door (at once, saying why), while a request alone is still admitted.
    A request refused for itself (too big for the model tier's queue even alone) lowers nothing."""
    exported = tiny_bundles[("feature-extraction", "bert")]
    records = ["a sentence with some words in it"] * 8  # 8 rows: the model tier's whole queue
    # Each batch waits 300 ms for more rows, so requests sent together meet in the queue.
    model = {"max_queue_size": 8, "max_batch_size": 64, "max_queue_delay_ms": 300}
    with Stack(exported.local_dir, model=model) as stack, Client(stack.gateway) as client:

        def answer(_: int, records: list[str] = records) -> str:
            try:
                client.predict(records)
                return "OK"
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
                return exc.details()

        for _ in range(3):  # 9 rows, too big alone: refused by the model tier each time, never at the door
            assert answer(0, [*records, "one more"]).startswith("model tier queue is full (0 rows waiting")
        assert answer(0) == "OK"  # a whole queue's worth alone: admitted and answered
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            details = list(pool.map(answer, range(16)))
        behind = [d for d in details if d.startswith("model tier queue is full")]
        at_door = [d for d in details if d.startswith("gateway is full")]
        assert behind and at_door, details
        assert all(
            re.search(r"refused work at that load: it admits about \d+ records at once for now", d) for d in at_door
        )
        assert answer(0) == "OK"  # alone again: still admitted


def test_bundle_mismatch_is_refused(tiny_bundles, mlflow_store) -> None:
    """Preprocess from one bundle, model and postprocess from another: FAILED_PRECONDITION."""
    from splitserve.export import export_bundle

    first = tiny_bundles[("feature-extraction", "bert")]
    # The same source exported with other defaults: a compatible bundle with another fingerprint.
    second = export_bundle(
        first.source_uri, name="tiny-feature-extraction-bert", defaults={"pooling": "mean"}, show_progress=False
    )
    with (
        Stack(first.local_dir, model_bundle_uri=second, post_bundle_uri=second) as stack,
        Client(stack.gateway) as client,
    ):
        with pytest.raises(grpc.RpcError) as info:
            client.predict(OK_RECORDS)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "bundle mismatch" in info.value.details()
    with grpc.insecure_channel(stack.addresses["postprocess"]):
        pass
    with Stack(second) as stack, Client(stack.gateway) as client:
        assert np.asarray(client.predict(OK_RECORDS)[0]["embedding"]).ndim == 1  # the bundle's default pooling


def test_health_and_reflection(stack) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    expected = {
        "preprocess": "splitserve.v1.Preprocess",
        "model": "inference.GRPCInferenceService",
        "postprocess": "splitserve.v1.Postprocess",
        "gateway": "splitserve.v1.Gateway",
    }
    for tier, service in expected.items():
        with grpc.insecure_channel(stack.addresses[tier]) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for name in ("", service):
                status = health.Check(health_pb2.HealthCheckRequest(service=name)).status
                assert status == health_pb2.HealthCheckResponse.SERVING, (tier, name)
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            responses = reflection.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
            names = {s.name for r in responses for s in r.list_services_response.service}
            assert {service, "grpc.health.v1.Health"} <= names, (tier, names)


def test_info_reports_fingerprint(stack, tiny_bundles) -> None:
    with grpc.insecure_channel(stack.addresses["preprocess"]) as channel:
        info = pb_grpc.PreprocessStub(channel).Info(pb.TierInfoRequest())
    with Client(stack.gateway) as client:
        assert client.info() == {"model": info.model, "task": "token-classification", "fingerprint": info.fingerprint}
    assert len(info.fingerprint) == 32
