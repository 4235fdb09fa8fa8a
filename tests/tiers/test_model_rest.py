"""The model tier's Open Inference Protocol over REST (KServe v2, `rest_port`): unmodified
`tritonclient.http` and `tritonclient.grpc` both list the models (repository index), read the
metadata and infer, with the same numbers; JSON tensors, binary tensors and mixed; errors.

tritonclient runs in its own process: its generated `inference` protos would clash with ours."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import requests

from tests.support.stack import Stack

SCRIPT = r"""
import json, sys
import numpy as np
import tritonclient.grpc as tg
import tritonclient.http as th
from tritonclient.utils import InferenceServerException

grpc_address, http_address = sys.argv[1], sys.argv[2]
ids = np.array([[101, 7592, 2088, 102], [101, 2088, 102, 0]], dtype=np.int64)
arrays = {"input_ids": ids, "attention_mask": (ids > 0).astype(np.int64), "token_type_ids": np.zeros_like(ids)}
out = {}
for kind, lib, address in (("grpc", tg, grpc_address), ("http", th, http_address)):
    client = lib.InferenceServerClient(address)
    assert client.is_server_live() and client.is_server_ready()
    index = client.get_model_repository_index(as_json=True)["models"] if kind == "grpc" else client.get_model_repository_index()
    name = index[0]["name"]
    assert client.is_model_ready(name)
    meta = client.get_model_metadata(name, as_json=True) if kind == "grpc" else client.get_model_metadata(name)
    runs = {"binary": (True, True), "json": (False, False), "mixed": (True, False)} if kind == "http" else {"raw": None}
    for run, binary in runs.items():
        inputs = []
        for tensor in meta["inputs"]:
            t = lib.InferInput(tensor["name"], list(ids.shape), "INT64")
            if binary is None:
                t.set_data_from_numpy(arrays[tensor["name"]])
            else:
                t.set_data_from_numpy(arrays[tensor["name"]], binary_data=binary[0])
            inputs.append(t)
        wanted = [lib.InferRequestedOutput(meta["outputs"][0]["name"], **({} if binary is None else {"binary_data": binary[1]}))]
        result = client.infer(name, inputs, outputs=wanted)
        out[f"{kind}-{run}"] = result.as_numpy(meta["outputs"][0]["name"]).tolist()
    out[f"{kind}-all-outputs"] = client.infer(name, inputs).as_numpy(meta["outputs"][0]["name"]).tolist()
    try:
        client.infer("other", inputs)
    except InferenceServerException as exc:
        out[f"{kind}-error"] = [str(exc.status()), exc.message()]
    out[f"{kind}-index"], out[f"{kind}-meta"] = index, meta
print(json.dumps(out))
"""


def test_tritonclient_http_and_grpc(tiny_bundles) -> None:
    bundle = tiny_bundles[("feature-extraction", "bert")].local_dir
    with Stack(bundle, model={"rest_port": 0}) as stack:
        run = subprocess.run(
            [sys.executable, "-c", SCRIPT, stack.addresses["model"], stack.addresses["model-rest"]],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        out = json.loads(run.stdout)
        results = [
            np.asarray(v, dtype=np.float32)
            for k, v in out.items()
            if k.endswith(("raw", "binary", "json", "mixed", "all-outputs"))
        ]
        assert len(results) == 6 and results[0].shape[:2] == (2, 4)
        for r in results[1:]:
            assert np.array_equal(r, results[0])  # the same float32 numbers over every door and encoding
        assert out["http-index"] == out["grpc-index"] and out["http-index"][0]["state"] == "READY"
        for key in ("name", "versions", "platform"):
            assert out["http-meta"][key] == out["grpc-meta"][key]
        assert out["http-meta"]["inputs"][0] == {"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]}
        assert out["http-error"][0] == "404" and out["grpc-error"][0] == "StatusCode.NOT_FOUND"
        assert out["http-error"][1] == out["grpc-error"][1] and "other" in out["http-error"][1]


def test_json_tensors_and_errors(tiny_bundles) -> None:
    bundle = tiny_bundles[("feature-extraction", "bert")].local_dir
    with Stack(bundle, model={"rest_port": 0}) as stack:
        base = f"http://{stack.addresses['model-rest']}/v2"
        name = requests.post(f"{base}/repository/index", timeout=10).json()[0]["name"]
        meta = requests.get(f"{base}/models/{name}", timeout=10).json()
        version = meta["versions"][0]
        assert requests.get(f"{base}/models/{name}/versions/{version}/ready", timeout=10).status_code == 200
        assert requests.get(f"{base}", timeout=10).json()["extensions"] == ["binary_tensor_data", "model_repository"]
        ids = [[101, 7592, 2088, 102]]
        body = {
            "id": "r1",
            "inputs": [
                {"name": "input_ids", "datatype": "INT64", "shape": [1, 4], "data": ids},  # nested
                {"name": "attention_mask", "datatype": "INT64", "shape": [1, 4], "data": [1, 1, 1, 1]},  # flat
                {"name": "token_type_ids", "datatype": "INT64", "shape": [1, 4], "data": [0, 0, 0, 0]},
            ],
        }
        response = requests.post(f"{base}/models/{name}/versions/{version}/infer", json=body, timeout=30)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert (answer["id"], answer["model_name"], answer["model_version"]) == ("r1", name, version)
        (output,) = answer["outputs"]
        assert output["datatype"] == "FP32" and output["shape"][:2] == [1, 4]
        assert len(output["data"]) == int(np.prod(output["shape"])) and answer["parameters"]["input_tokens"] == 4
        for change, status, message in (
            ({"inputs": body["inputs"][:1]}, 400, "attention_mask"),
            ({"inputs": [{**body["inputs"][0], "shape": [1, 5]}, *body["inputs"][1:]]}, 400, "input_ids"),
            ({"inputs": [{**body["inputs"][0], "data": [[101, 7592]]}, *body["inputs"][1:]]}, 400, "do not fit shape"),
        ):
            response = requests.post(f"{base}/models/{name}/infer", json={**body, **change}, timeout=30)
            assert response.status_code == status and message in response.json()["error"], response.text
        response = requests.post(f"{base}/models/{name}/versions/0123/infer", json=body, timeout=30)
        assert response.status_code == 409 and "0123" in response.json()["error"]
        assert requests.post(f"{base}/models/{name}/infer", data=b"{", timeout=30).status_code == 400
        assert requests.get(f"{base}/health/ready", timeout=10).json() == {"ready": True}
