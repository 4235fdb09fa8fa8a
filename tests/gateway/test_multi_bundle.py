"""Several bundles behind one gateway and one set of tiers (`--bundle NAME=URI`): requests choose
one by `model`; every tier holds each bundle's stage (the model tier one ONNX session each); the
gateway's Info, REST `/v1/models` and the model tier's `RepositoryIndex` list them."""

from __future__ import annotations

import json
import urllib.request

import grpc
import pytest

from protos import grpc_predict_v2_pb2 as oip
from protos import grpc_predict_v2_pb2_grpc as oip_grpc
from protos import splitserve_pb2 as pb
from protos import splitserve_pb2_grpc as pb_grpc
from splitserve.client import Client
from tests.gateway.test_rollout import RECORDS, _expected, _same
from tests.support.stack import Stack


def test_two_bundles_behind_one_gateway(tiny_bundles) -> None:
    first, second = tiny_bundles[("feature-extraction", "bert")], tiny_bundles[("feature-extraction", "roberta")]
    (fp1, answer1), (fp2, answer2) = _expected(first.local_dir), _expected(second.local_dir)
    more = {"bundle": [f"other={second.local_dir}"]}
    with (
        Stack(first.local_dir, pre=more, model=more, post=more, gateway={"rest_port": 0}) as stack,
        Client(stack.gateway) as client,
        grpc.insecure_channel(stack.gateway) as channel,
        grpc.insecure_channel(stack.addresses["model"]) as model_channel,
    ):
        default = pb_grpc.GatewayStub(channel).Info(pb.TierInfoRequest())
        assert list(default.models) == [default.model, "other"] and default.fingerprint == fp1
        assert pb_grpc.GatewayStub(channel).Info(pb.TierInfoRequest(model="other")).fingerprint == fp2

        assert _same(client.predict(RECORDS), answer1)
        assert _same(client.predict(RECORDS, model=default.model), answer1)
        assert _same(client.predict(RECORDS, model="other"), answer2)
        with pytest.raises(grpc.RpcError) as info:
            client.predict(RECORDS, model="nope")
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert info.value.details().startswith("model 'nope' is not served here; this gateway serves ")

        index = oip_grpc.GRPCInferenceServiceStub(model_channel).RepositoryIndex(oip.RepositoryIndexRequest())
        assert {(m.name, m.version) for m in index.models} == {(default.model, fp1), ("other", fp2)}
        with urllib.request.urlopen(f"{stack.rest}/v1/models", timeout=30) as response:
            listed = json.load(response)
        assert [m["id"] for m in listed["data"]] == [default.model, "other"]


TRITON = r"""
import json, sys
import tritonclient.grpc as tg
import tritonclient.http as th

out = {}
for kind, lib, address in (("grpc", tg, sys.argv[1]), ("http", th, sys.argv[2])):
    client = lib.InferenceServerClient(address)
    index = lambda: client.get_model_repository_index(as_json=True)["models"] if kind == "grpc" else client.get_model_repository_index()
    client.unload_model("other")
    out[f"{kind}-unloaded"] = [index(), client.is_model_ready("other")]
    client.load_model("other")  # from where it was loaded before
    out[f"{kind}-loaded"] = [index(), client.is_model_ready("other")]
print(json.dumps(out))
"""


def test_repository_load_and_unload(tiny_bundles) -> None:
    """OIP's RepositoryModelLoad / RepositoryModelUnload on the model tier, from unmodified
    tritonclient (gRPC and REST, in its own process: its protos would clash with ours), and with
    the bundle to load given as parameter `uri`."""
    import subprocess
    import sys

    first, second = tiny_bundles[("feature-extraction", "bert")], tiny_bundles[("feature-extraction", "roberta")]
    fp2 = _expected(second.local_dir)[0]
    with (
        Stack(first.local_dir, model={"rest_port": 0}) as stack,
        grpc.insecure_channel(stack.addresses["model"]) as channel,
    ):
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.RepositoryModelLoad(oip.RepositoryModelLoadRequest(model_name="other"))
        assert (
            info.value.code() == grpc.StatusCode.NOT_FOUND
            and "give its bundle as parameter 'uri'" in info.value.details()
        )
        load = oip.RepositoryModelLoadRequest(model_name="other")
        load.parameters["uri"].string_param = second.local_dir
        stub.RepositoryModelLoad(load)
        assert list(stub.ModelMetadata(oip.ModelMetadataRequest(name="other")).versions) == [fp2]

        run = subprocess.run(
            [sys.executable, "-c", TRITON, stack.addresses["model"], stack.addresses["model-rest"]],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        out = json.loads(run.stdout)
        for kind in ("grpc", "http"):
            unloaded, ready = out[f"{kind}-unloaded"]
            assert not ready and {(m["name"], m["state"], m.get("reason")) for m in unloaded} == {
                (first_name(stack), "READY", None),
                ("other", "UNAVAILABLE", "unloaded"),
            }
            loaded, ready = out[f"{kind}-loaded"]
            assert ready and {m["name"]: m["state"] for m in loaded} == {first_name(stack): "READY", "other": "READY"}


def first_name(stack: Stack) -> str:
    return next(r.tier for r in stack.running if r.tier.name == "model").model_name


def test_up_serves_several_bundles(tiny_bundles) -> None:
    """`splitserve up URI1 URI2`: real processes, one gateway, each bundle under its own name."""
    from tests.support.cli import up

    first, second = tiny_bundles[("feature-extraction", "bert")], tiny_bundles[("feature-extraction", "roberta")]
    (_, answer1), (_, answer2) = _expected(first.local_dir), _expected(second.local_dir)
    with (
        up(first.bundle_uri, second.bundle_uri, "--replicas", "model=1", "--no-rest") as addresses,
        Client(addresses["gateway"]) as client,
        grpc.insecure_channel(addresses["gateway"]) as channel,
    ):
        names = list(pb_grpc.GatewayStub(channel).Info(pb.TierInfoRequest()).models)
        assert names == ["tiny-feature-extraction-bert", "tiny-feature-extraction-roberta"]
        assert _same(client.predict(RECORDS), answer1)
        assert _same(client.predict(RECORDS, model=names[1]), answer2)
