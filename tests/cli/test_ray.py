"""`splitserve ray`: the Serve config it writes is valid for Ray Serve's own schema
(`ServeDeploySchema`, what `serve deploy` checks) and builds the application it names; the
RayService manifest embeds that config and is valid against KubeRay's RayService CRD
(tests/data/crds); the flags reach the deployments; a registry alias is pinned to the version it
names; mistakes get one line. The application itself,
on a Ray cluster of two hosts: tests/cli/test_ray_cluster.py."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.cli.test_k8s import closed
from tests.support.cli import one_error_line, run

CRD = Path(__file__).parents[1] / "data" / "crds" / "ray.io_rayservices.yaml"


@functools.cache
def rayservice_validator() -> jsonschema.Draft7Validator:
    crd = yaml.load(CRD.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    assert crd["spec"]["group"] == "ray.io"
    [schema] = [v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return jsonschema.Draft7Validator(closed(schema))


def written(tmp_path: Path, *extra: str) -> tuple[dict[str, Any], dict[str, Any]]:
    out = tmp_path / "app"
    done = run("ray", "models:/minilm-serving/3", "--out", str(out), *extra)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"serve deploy {out}/serve.yaml" in done.stdout
    service = out / "rayservice.yaml"
    assert service.exists() == ("--image" in extra)  # no image, no RayService (splitserve publishes none)
    return yaml.safe_load((out / "serve.yaml").read_text()), yaml.safe_load(
        service.read_text()
    ) if service.exists() else {}


def test_serve_config_and_rayservice_are_valid_and_carry_the_flags(tmp_path: Path) -> None:
    from ray.serve.schema import ServeDeploySchema

    serve, service = written(
        tmp_path,
        *("--replicas", "model=2:6", "--target-ongoing", "model=3", "--cpus", "preprocess=0.25"),
        *("--model-gpus", "1", "--setting", "model.intra_op_threads=1", "--setting", "gateway.timeout_s=5"),
        *("--env", "OTEL_SERVICE_NAME=x", "--tracking-uri", "http://mlflow:5000", "--image", "r/splitserve:1"),
    )
    ServeDeploySchema.model_validate(serve)  # what `serve deploy` and KubeRay check
    [app] = serve["applications"]
    assert app["import_path"] == "splitserve.ray_serve.app:build"
    assert app["args"] == {
        "bundle_uri": "models:/minilm-serving/3",
        "settings": {"model": {"intra_op_threads": 1}, "gateway": {"timeout_s": 5}},
    }
    env = app["runtime_env"]["env_vars"]
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000" and env["OTEL_SERVICE_NAME"] == "x"
    deployments = {d["name"]: d for d in app["deployments"]}
    assert list(deployments) == ["preprocess", "model", "postprocess", "gateway"]
    model = deployments["model"]
    assert model["autoscaling_config"]["min_replicas"] == 2 and model["autoscaling_config"]["max_replicas"] == 6
    assert model["autoscaling_config"]["target_ongoing_requests"] == 3
    assert model["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 1.0}
    assert deployments["preprocess"]["ray_actor_options"] == {"num_cpus": 0.25}
    # The CPU tiers' ceilings: what the model tier's ceiling keeps busy by the capacity table.
    assert 1 <= deployments["postprocess"]["autoscaling_config"]["max_replicas"] <= 6
    assert serve["grpc_options"]["grpc_servicer_functions"] == ["splitserve.ray_serve.proxy.add_gateway_servicer"]

    rayservice_validator().validate(service)
    assert yaml.safe_load(service["spec"]["serveConfigV2"]) == serve
    cluster = service["spec"]["rayClusterConfig"]
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    [gpu] = groups["gpu"]["template"]["spec"]["containers"]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1" and gpu["image"] == "r/splitserve:1"


def test_the_application_builds_from_the_config(tmp_path: Path) -> None:
    """The import path and args build a four-deployment application (no cluster needed to build it)."""
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve._private.build_app import build_app

    serve, _ = written(tmp_path)
    [app] = serve["applications"]
    from splitserve.ray_serve.app import build

    built = call_user_app_builder_with_args_if_necessary(build, app["args"])
    names = {d.name for d in build_app(built, name=app["name"]).deployments}
    assert names == {"preprocess", "model", "postprocess", "gateway"}


def test_an_alias_is_pinned_to_the_version_it_names_now(mlflow_store: Path, tmp_path: Path) -> None:
    """`models:/name@alias` (BUNDLE_URI, a tier's `bundle` setting) becomes `models:/name/N` in the
    config, said on stdout: every replica loads that version, and a replica started later finds it
    in its host's cache (splitserve.core.cache's index: never for an alias). No such alias: one line."""
    import mlflow

    client = mlflow.MlflowClient()
    client.create_registered_model("ray-pinned")
    for _ in range(2):
        client.create_model_version("ray-pinned", source=(tmp_path / "bundle").as_uri())
    client.set_registered_model_alias("ray-pinned", "live", "2")
    out = tmp_path / "app"
    bundles = '["b=models:/ray-pinned@live", "c=models:/other/1"]'
    done = run("ray", "models:/ray-pinned@live", "--out", str(out), "--setting", f"preprocess.bundle={bundles}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "models:/ray-pinned@live is models:/ray-pinned/2" in done.stdout
    [app] = yaml.safe_load((out / "serve.yaml").read_text())["applications"]
    assert app["args"]["bundle_uri"] == "models:/ray-pinned/2"
    assert app["args"]["settings"]["preprocess"]["bundle"] == ["b=models:/ray-pinned/2", "c=models:/other/1"]
    assert app["runtime_env"]["env_vars"]["MLFLOW_TRACKING_URI"] == f"sqlite:///{mlflow_store / 'mlflow.db'}"
    gone = run("ray", "models:/ray-pinned@gone", "--out", str(out))
    one_error_line(gone, "cannot resolve models:/ray-pinned@gone", "gone not found", str(mlflow_store / "mlflow.db"))


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--replicas", "model=3:2"], "--replicas model=3:2: expected MIN:MAX, 1 <= MIN <= MAX"),
        (["--replicas", "cache=1:2"], "--replicas cache=...: the deployments are preprocess, model"),
        (["--cpus", "model=0"], "--cpus model=0: expected a number above 0"),
        (["--setting", "model.no_such_field=1"], "--setting"),
        (["--setting", "intra_op_threads=1"], "expected TIER.FIELD"),
        (["--setting", "model.watch_alias=true"], "do not follow an alias yet"),
    ],
)
def test_mistakes_get_one_line(extra: list[str], expected: str, tmp_path: Path) -> None:
    one_error_line(run("ray", "models:/m/1", "--out", str(tmp_path / "x"), *extra), expected)


def test_a_request_whose_gateway_replica_died_is_answered_retriable_over_http() -> None:
    """Serve's HTTP proxy says 500 for a request whose ingress replica died (RayActorError); the
    proxy process (where `add_gateway_servicer` runs) says 503, UNAVAILABLE's status, with the REST
    door's error JSON, which clients retry. Anything else keeps Serve's status."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc
    from ray.exceptions import ActorDiedError, ActorUnavailableError
    from ray.serve._private import http_util, proxy

    from protos.splitserve_pb2_grpc import GatewayServicer
    from splitserve.ray_serve.proxy import RETRY, add_gateway_servicer, retriable_http_status

    status = retriable_http_status(http_util.get_http_response_status)
    for lost in (ActorDiedError(), ActorUnavailableError("unreachable", None)):
        answer = status(lost, None, "r1")
        [start, body] = http_util.send_http_response_on_exception(answer, False)
        assert start["status"] == 503, start
        assert json.loads(body["body"]) == {"error": {"code": "UNAVAILABLE", "message": RETRY}}
    assert status(ValueError("a bug"), None, "r2").code == 500
    assert status(TimeoutError(), 5.0, "r3").code == 408
    assert retriable_http_status(status) is status  # wrapped once, however often the proxy registers
    with ThreadPoolExecutor(1) as pool:
        add_gateway_servicer(GatewayServicer(), grpc.server(pool))
    assert getattr(proxy.get_http_response_status, "splitserve_retriable", False)
