"""`splitserve ray`: the Serve config it writes is valid for Ray Serve's own schema
(`ServeDeploySchema`, what `serve deploy` checks) and builds the application it names; the
RayService manifest embeds that config and is valid against KubeRay's RayService CRD
(tests/data/crds); the flags reach the deployments; mistakes get one line. The application itself,
on a Ray cluster of two hosts: tests/cli/test_ray_cluster.py."""

from __future__ import annotations

import functools
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
    done = run("ray", "models:/minilm-serving@champion", "--out", str(out), *extra)
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
        "bundle_uri": "models:/minilm-serving@champion",
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


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--replicas", "model=3:2"], "--replicas model=3:2: expected MIN:MAX, 1 <= MIN <= MAX"),
        (["--replicas", "cache=1:2"], "--replicas cache=...: the deployments are preprocess, model"),
        (["--cpus", "model=0"], "--cpus model=0: expected a number above 0"),
        (["--setting", "model.no_such_field=1"], "--setting"),
        (["--setting", "intra_op_threads=1"], "expected TIER.FIELD"),
    ],
)
def test_mistakes_get_one_line(extra: list[str], expected: str, tmp_path: Path) -> None:
    one_error_line(run("ray", "models:/m/1", "--out", str(tmp_path / "x"), *extra), expected)
