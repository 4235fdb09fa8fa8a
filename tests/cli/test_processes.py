"""`splitserve up` as a user runs it: every tier a real process on loopback, replicas balanced
and retried, tier boundaries (no torch or onnxruntime in the CPU tiers, small RSS), an
unmodified Triton client on the model tier, and a clean stop on SIGTERM."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import psutil
import pytest
import requests

from splitserve.client import Client

RSS_LIMIT_MB = 150
TRITON_SCRIPT = r"""
import json, sys
import numpy as np
import tritonclient.grpc as tc
address, model = sys.argv[1], sys.argv[2]
client = tc.InferenceServerClient(address)
assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(model)
meta = client.get_model_metadata(model, as_json=True)
ids = np.array([[101, 7592, 2088, 102]], dtype=np.int64)
inputs = []
for name, array in (("input_ids", ids), ("attention_mask", np.ones_like(ids)), ("token_type_ids", np.zeros_like(ids))):
    t = tc.InferInput(name, list(array.shape), "INT64")
    t.set_data_from_numpy(array)
    inputs.append(t)
result = client.infer(model, inputs, outputs=[tc.InferRequestedOutput("last_hidden_state")])
out = result.as_numpy("last_hidden_state")
print(json.dumps({"meta": meta, "shape": list(out.shape), "first": out[0, 0, :4].tolist()}))
"""


def tier_processes(up: subprocess.Popen) -> dict[str, list[psutil.Process]]:
    out: dict[str, list[psutil.Process]] = {}
    for child in psutil.Process(up.pid).children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
        except psutil.Error:  # a replica that was just killed (zombie) or is gone
            continue
        for tier in ("serve-preprocess", "serve-model", "serve-postprocess", "serve-gateway"):
            if f"splitserve {tier}" in cmd:
                out.setdefault(tier.removeprefix("serve-"), []).append(child)
    return out


def mapped_libraries(proc: psutil.Process) -> str:
    return "\n".join(m.path for m in proc.memory_maps(grouped=True))


@pytest.fixture(scope="module")
def up(minilm_bundle):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "splitserve",
            "up",
            minilm_bundle.bundle_uri,
            "--replicas",
            "preprocess=2",
            "--replicas",
            "model=2",
            "--replicas",
            "postprocess=1",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    line = proc.stdout.readline()
    assert line, "splitserve up exited before printing its addresses"
    addresses = json.loads(line)
    yield proc, addresses
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def test_up_serves_every_tier(up, minilm_bundle) -> None:
    proc, addresses = up
    assert set(addresses) == {"gateway", "rest", "preprocess", "model", "postprocess"}
    assert len(addresses["preprocess"]) == 2 and len(addresses["model"]) == 2 and len(addresses["postprocess"]) == 1
    # The tiers listen on Unix-domain sockets in one private folder; the gateway's ports are TCP.
    sockets = [Path(a.removeprefix("unix:")) for t in ("preprocess", "model", "postprocess") for a in addresses[t]]
    assert all(s.is_socket() for s in sockets) and len({s.parent for s in sockets}) == 1
    assert sockets[0].parent.stat().st_mode & 0o077 == 0
    assert addresses["gateway"].startswith("127.0.0.1:") and addresses["rest"].startswith("127.0.0.1:")
    with Client(addresses["gateway"]) as client:
        results = client.predict(
            ["Florida has nice beaches", "Elon Musk owns Tesla"], params={"pooling": "mean", "normalize": True}
        )
        rest = requests.post(
            f"http://{addresses['rest']}/v1/predict",
            json={
                "records": ["Florida has nice beaches", "Elon Musk owns Tesla"],
                "params": {"pooling": "mean", "normalize": True},
            },
            timeout=30,
        )
        assert rest.status_code == 200 and rest.json()["results"] == results
        assert [len(r["embedding"]) for r in results] == [384, 384]
        assert abs(np.linalg.norm(results[0]["embedding"]) - 1) < 1e-5
        assert {"preprocess", "model", "postprocess", "gateway", "queue", "inference"} <= set(client.last_timings_us)
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "splitserve",
            "predict",
            "--target",
            addresses["gateway"],
            "Florida has nice beaches",
            "--param",
            "pooling=cls",
        ],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0, cli.stderr
    assert len(json.loads(cli.stdout)[0]["embedding"]) == 384


def test_tier_boundaries(up) -> None:
    proc, _ = up
    tiers = tier_processes(proc)
    assert {k: len(v) for k, v in tiers.items()} == {"preprocess": 2, "model": 2, "postprocess": 1, "gateway": 1}
    for tier in ("preprocess", "postprocess"):
        for p in tiers[tier]:
            libs = mapped_libraries(p)
            assert "torch" not in libs and "onnxruntime" not in libs, f"{tier} loaded torch/onnxruntime"
            rss_mb = p.memory_info().rss / 2**20
            assert rss_mb < RSS_LIMIT_MB, f"{tier} RSS {rss_mb:.0f} MB"
    for p in tiers["model"]:
        assert "libtorch" not in mapped_libraries(p), "the ONNX model tier loaded torch"
    assert "torch" not in mapped_libraries(tiers["gateway"][0])


def test_unmodified_triton_client_calls_model_tier(up) -> None:
    """tritonclient runs in its own process: its generated `inference` protos would clash with
    ours in one protobuf descriptor pool."""
    _, addresses = up
    out = subprocess.run(
        [sys.executable, "-c", TRITON_SCRIPT, addresses["model"][0], "all-MiniLM-L6-v2"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["meta"]["name"] == "all-MiniLM-L6-v2"
    assert [i["name"] for i in result["meta"]["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert result["meta"]["outputs"][0]["name"] == "last_hidden_state"
    assert result["shape"] == [1, 4, 384]


def test_replica_death_loses_nothing(up) -> None:
    """SIGKILL a model replica under load: every request still succeeds (retried on the other
    replica), and `up` restarts the dead one on the same port."""
    proc, addresses = up
    victim = tier_processes(proc)["model"][0]
    texts = [f"sentence number {i} about beaches in Florida" for i in range(4)]
    with Client(addresses["gateway"]) as client:
        expected = client.predict(texts, params={"pooling": "mean"})

        def call(_: int) -> list:
            return client.predict(texts, params={"pooling": "mean"})

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(call, i) for i in range(60)]
            time.sleep(0.3)
            victim.send_signal(signal.SIGKILL)
            results = [f.result() for f in futures]
    for got in results:
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(g["embedding"], e["embedding"], atol=1e-5)
    deadline = time.time() + 60
    while time.time() < deadline and len(tier_processes(proc).get("model", [])) < 2:
        time.sleep(0.5)
    assert len(tier_processes(proc)["model"]) == 2, "the killed replica was not restarted"
    for address in addresses["model"]:  # the restarted one listens on its socket again (its old file replaced)
        with grpc.insecure_channel(address) as channel:
            grpc.channel_ready_future(channel).result(timeout=60)


def test_a_dead_gateway_is_restarted(up) -> None:
    """Issue 11, defect 10: a dead gateway took down all of `up` (it exited 1 and stopped every
    tier). It is restarted like any tier, on its port."""
    proc, addresses = up
    tier_processes(proc)["gateway"][0].send_signal(signal.SIGKILL)
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with Client(addresses["gateway"], timeout_s=5) as client:
                assert len(client.predict(["Florida has nice beaches"])) == 1
            break
        except grpc.RpcError:
            time.sleep(0.5)
    else:
        pytest.fail("the gateway did not come back")
    assert proc.poll() is None, "up stopped"


def test_sigterm_stops_everything(up) -> None:
    proc, addresses = up
    children = [c for cs in tier_processes(proc).values() for c in cs]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"still running: {alive}"
    assert not Path(addresses["model"][0].removeprefix("unix:")).parent.exists(), "the sockets' folder remains"
    with grpc.insecure_channel(addresses["gateway"]) as channel, pytest.raises(grpc.FutureTimeoutError):
        grpc.channel_ready_future(channel).result(timeout=1)
