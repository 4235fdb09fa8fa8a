"""`splitserve k8s` and `splitserve kserve`: every manifest set (hpa, keda, kserve; the cpu and gpu
overlays) is written by the CLI, rendered by `kubectl kustomize`, equal to what the Python builds,
valid against Kubernetes' own schemas and the KEDA / KServe CRDs' OpenAPI schemas (tests/data/crds),
and every container's command line is one the CLI accepts (for KServe's transformer, with the
arguments KServe appends)."""

from __future__ import annotations

import functools
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from splitserve import k8s
from splitserve.cli import build_parser, settings_from_args
from splitserve.k8s import capacity

K8S_VERSION = "1.30.0"
CRDS = {
    "ScaledObject": Path(__file__).parents[1] / "data" / "crds" / "keda.sh_scaledobjects.yaml",
    "InferenceService": Path(__file__).parents[1] / "data" / "crds" / "serving.kserve.io_inferenceservices.yaml",
}
REPO = Path(__file__).resolve().parents[2]
needs_kubectl = pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl (for `kubectl kustomize`) not found"
)


def closed(schema: Any) -> Any:
    """A CRD schema where an object with listed properties takes no others, as the API server's
    strict field validation refuses unknown fields (the schema alone would let them through)."""
    if isinstance(schema, list):
        return [closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: closed(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@functools.cache
def crd_validator(kind: str, api_version: str) -> jsonschema.Draft7Validator:
    crd = yaml.load(CRDS[kind].read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    group, version = api_version.split("/")
    assert crd["spec"]["group"] == group
    [schema] = [v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v["name"] == version]
    return jsonschema.Draft7Validator(closed(schema))


def validate(obj: dict[str, Any]) -> None:
    if obj["kind"] in CRDS:
        crd_validator(obj["kind"], obj["apiVersion"]).validate(obj)
    else:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def kustomize(folder: Path) -> list[dict[str, Any]]:
    out = subprocess.run(["kubectl", "kustomize", str(folder)], check=True, capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_key(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def kserve_appends(args: list[str], isvc: str, namespace: str) -> list[str]:
    """What KServe adds to a transformer container's args (pkg/apis/serving/v1beta1/transformer_custom.go)."""
    out = list(args)
    for flag, value in (
        ("--model_name", isvc),
        ("--predictor_host", f"{isvc}-predictor.{namespace}"),
        ("--http_port", "8080"),
    ):
        if not any(a.startswith(flag) for a in out):
            out += [flag, value]
    return out


def containers(obj: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(what runs it, container) of every container an object starts."""
    if obj["kind"] == "Deployment":
        return [("deployment", c) for c in obj["spec"]["template"]["spec"]["containers"]]
    if obj["kind"] == "InferenceService":
        return [(part, c) for part in ("predictor", "transformer") for c in obj["spec"][part]["containers"]]
    return []


def parse(args: list[str]) -> Any:
    from gateway_svc.settings import GatewaySettings
    from model_svc.settings import ModelSettings
    from postprocess_svc.settings import PostprocessSettings
    from preprocess_svc.settings import PreprocessSettings

    classes = {
        "serve-preprocess": PreprocessSettings,
        "serve-postprocess": PostprocessSettings,
        "serve-model": ModelSettings,
        "serve-gateway": GatewaySettings,
    }
    return settings_from_args(classes[args[0]], build_parser().parse_args(args))


def options(autoscaler: str) -> k8s.Options:
    return k8s.Options(
        "models:/ner-serving@champion",
        tracking_uri="http://mlflow.example:5000",
        image="registry.example/splitserve:1",
        gpu_image="registry.example/splitserve:1-gpu",
        namespace="ml",
        replicas={"model": 3},
        autoscaler=autoscaler,
    )


def write_with_cli(kind: str, autoscaler: str, out: Path) -> None:
    o = options(autoscaler)
    argv = [sys.executable, "-m", "splitserve", kind, o.bundle_uri, "--tracking-uri", o.tracking_uri]
    argv += ["--image", o.image, "--gpu-image", str(o.gpu_image), "--namespace", o.namespace]
    argv += ["--replicas", "model=3", "--autoscaler", autoscaler, "--out", str(out)]
    subprocess.run(argv, check=True, capture_output=True, cwd=out.parent)


@needs_kubectl
@pytest.mark.parametrize(
    ("kind", "autoscaler"), [("k8s", "hpa"), ("k8s", "keda"), ("kserve", "hpa"), ("kserve", "keda")]
)
def test_manifest_sets_render_validate_and_parse(kind: str, autoscaler: str, tmp_path: Path) -> None:
    write_with_cli(kind, autoscaler, tmp_path / "tree")
    table = capacity.load()
    for overlay, device in (("cpu", "cpu"), ("gpu", "cuda")):
        rendered = kustomize(tmp_path / "tree" / "overlays" / overlay)
        assert by_key(rendered) == by_key(k8s.manifests(options(autoscaler), kind, device, table))
        for obj in rendered:
            validate(obj)
            assert obj["metadata"]["namespace"] == "ml"
        commands = 0
        for obj in rendered:
            for part, container in containers(obj):
                args = container["args"]
                if part == "transformer":
                    args = kserve_appends(args, obj["metadata"]["name"], "ml")
                settings = parse(args)
                commands += 1
                assert settings.port == 7000 and settings.host == "0.0.0.0"
                if args[0] == "serve-model":
                    assert settings.device == device
                    assert settings.intra_op_threads == 1  # a 1-CPU pod: not os.cpu_count(), the node's
                    assert settings.idle_threads == settings.parallel_batches == 1
                    limits = container["resources"]["limits"]
                    assert ("nvidia.com/gpu" in limits) == (device == "cuda")
                    assert container["image"].endswith("-gpu") == (device == "cuda")
                if args[0] == "serve-gateway" and kind == "k8s":
                    assert settings.model == ["dns:///splitserve-model.ml.svc.cluster.local:7000"]
                if args[0] == "serve-gateway" and kind == "kserve":
                    assert settings.inline_stages == "models:/ner-serving@champion"
                    assert settings.model == ["dns:///splitserve-predictor.ml.svc.cluster.local:80"]
        assert commands == (4 if kind == "k8s" else 2)
        kinds = sorted(o["kind"] for o in rendered)
        if kind == "k8s":
            scaler = "ScaledObject" if autoscaler == "keda" else "HorizontalPodAutoscaler"
            assert kinds == sorted(["Deployment", "Service", "PodDisruptionBudget", scaler] * 4 + ["NetworkPolicy"] * 3)
            objects = by_key(rendered)
            pods = capacity.table_for(table, overlay)["pods_per_model_pod"]
            for tier in k8s.TIERS:
                want = 3 if tier == "model" else math.ceil(3 * pods[tier])
                assert objects[("Deployment", f"splitserve-{tier}")]["spec"]["replicas"] == want
                assert objects[("PodDisruptionBudget", f"splitserve-{tier}")]["spec"]["maxUnavailable"] == 1
            for tier in ("preprocess", "model", "postprocess"):  # headless: the gateway balances per pod
                assert objects[("Service", f"splitserve-{tier}")]["spec"]["clusterIP"] == "None"
            assert "clusterIP" not in objects[("Service", "splitserve-gateway")]["spec"]
            if autoscaler == "keda":
                model = objects[("ScaledObject", "splitserve-model")]["spec"]["triggers"][0]["metadata"]
                assert (
                    "splitserve_model_queue_rows" in model["query"] and 'pod=~"splitserve-model-.*"' in model["query"]
                )
                assert model["threshold"] == str(capacity.queue_target_rows(table, overlay))
                pre = objects[("ScaledObject", "splitserve-preprocess")]["spec"]["triggers"][0]["metadata"]
                assert 'method="Preprocess"' in pre["query"]
        else:
            assert kinds == ["InferenceService", "PodDisruptionBudget", "PodDisruptionBudget"]
            isvc = by_key(rendered)[("InferenceService", "splitserve")]
            predictor = isvc["spec"]["predictor"]["containers"][0]
            assert {"name": "PROTOCOL", "value": "v2"} in predictor["env"]
            assert predictor["ports"] == [{"name": "h2c", "containerPort": 7000, "protocol": "TCP"}]
            assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == autoscaler
            metric = isvc["spec"]["predictor"]["autoScaling"]["metrics"][0]
            assert metric["type"] == ("External" if autoscaler == "keda" else "Resource")
            assert isvc["spec"]["predictor"]["minReplicas"] == 3


def test_tiers_take_calls_from_the_gateway_only_and_mutual_tls_from_one_secret(tmp_path: Path) -> None:
    # Issue 11, defect 12: NetworkPolicies let only the gateway's pods call the tiers, and one TLS
    # Secret turns on mutual TLS between the gateway and the tiers, end to end.
    o = options("hpa")
    argv = [sys.executable, "-m", "splitserve", "k8s", o.bundle_uri, "--tracking-uri", o.tracking_uri]
    argv += ["--namespace", "ml", "--tier-tls-secret", "splitserve-tier-tls", "--out", str(tmp_path / "tree")]
    argv += ["--image", o.image]
    subprocess.run(argv, check=True, capture_output=True, cwd=tmp_path)
    docs = [d for f in sorted((tmp_path / "tree" / "base").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text())]
    objects = by_key([d for d in docs if d.get("kind") != "Kustomization"])
    gateway = {"app.kubernetes.io/name": "splitserve", "app.kubernetes.io/component": "gateway"}
    for tier in ("preprocess", "model", "postprocess"):
        policy = objects[("NetworkPolicy", f"splitserve-{tier}")]
        validate(policy)
        assert policy["spec"]["ingress"][0]["from"] == [{"podSelector": {"matchLabels": gateway}}]
    for tier in k8s.TIERS:
        pod = objects[("Deployment", f"splitserve-{tier}")]["spec"]["template"]["spec"]
        assert {"name": "tier-tls", "secret": {"secretName": "splitserve-tier-tls"}} in pod["volumes"]
        settings = parse(pod["containers"][0]["args"])
        tls = f"{k8s.TLS_DIR}/"
        if tier == "gateway":
            assert (settings.tier_tls_ca, settings.tier_tls_cert) == (tls + "ca.crt", tls + "tls.crt")
            assert settings.tier_tls_server_name == "splitserve-tier"
        else:
            assert (settings.tls_cert, settings.tls_client_ca) == (tls + "tls.crt", tls + "ca.crt")


@needs_kubectl
def test_several_bundles_and_alias_rollouts_reach_every_tier(tmp_path: Path) -> None:
    # Issue 14 on Kubernetes: `--bundle NAME=URI` and `--watch-alias` reach the preprocess, model and
    # postprocess pods as `up` passes them; the gateway learns the bundles from its tiers.
    o = options("hpa")
    argv = [sys.executable, "-m", "splitserve", "k8s", o.bundle_uri, "--tracking-uri", o.tracking_uri]
    argv += ["--bundle", "sentiment=models:/sentiment@champion", "--bundle", "pinned=models:/pinned/3"]
    argv += ["--watch-alias", "--watch-interval-s", "30", "--image", o.image]
    subprocess.run([*argv, "--out", str(tmp_path / "tree")], check=True, capture_output=True, cwd=tmp_path)
    for overlay in ("cpu", "gpu"):
        objects = by_key(kustomize(tmp_path / "tree" / "overlays" / overlay))
        for tier in k8s.TIERS:
            deployment = objects[("Deployment", f"splitserve-{tier}")]
            validate(deployment)
            settings = parse(deployment["spec"]["template"]["spec"]["containers"][0]["args"])
            if tier == "gateway":
                assert "--watch-alias" not in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
                continue
            assert settings.bundle_uri == o.bundle_uri
            assert settings.bundle == ["sentiment=models:/sentiment@champion", "pinned=models:/pinned/3"]
            assert settings.watch_alias and settings.watch_interval_s == 30


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["k8s", "models:/m/1", "--watch-alias"],
            "error: --watch-alias follows a registry alias: give models:/NAME@ALIAS, not 'models:/m/1'",
        ),
        (["k8s", "models:/m@a", "--bundle", "other"], "error: --bundle takes NAME=URI, not 'other'"),
        (
            ["k8s", "models:/m@a", "--watch-alias", "--watch-interval-s", "0"],
            "error: --watch-interval-s must be above 0, not 0.0",
        ),
        (
            ["kserve", "models:/m@a", "--watch-alias"],
            "error: --watch-alias and --bundle need the preprocess and postprocess tiers (KServe's transformer runs "
            "the stages inline): use `splitserve k8s`",
        ),
    ],
)
def test_rollout_mistakes_get_one_line(extra: list[str], message: str, tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "splitserve", *extra, "--tracking-uri", "http://mlflow:5000"]
    done = subprocess.run([*argv, "--out", str(tmp_path / "t")], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode != 0
    assert done.stderr.strip() == message


def test_the_gpu_overlay_patches_only_what_differs(tmp_path: Path) -> None:
    files = k8s.render(options("keda"), "k8s")
    patches = sorted(p for p in files if p.startswith("overlays/gpu/") and not p.endswith("kustomization.yaml"))
    # The committed table has no GPU row: the replica ratio stays, the model pods change.
    assert patches == ["overlays/gpu/deployment-splitserve-model.yaml"]
    [patch] = files[patches[0]]
    assert set(patch["spec"]["template"]["spec"]["containers"][0]) >= {"args", "image", "resources"}
    assert [p for p in files if p.startswith("overlays/cpu/")] == ["overlays/cpu/kustomization.yaml"]


def test_merge_patch() -> None:
    base = {"a": 1, "b": {"c": [1, 2], "d": 2}, "gone": 0}
    target = {"a": 1, "b": {"c": [1, 3], "d": 2, "e": 5}}
    assert k8s.merge_patch(base, target) == {"b": {"c": [1, 3], "e": 5}, "gone": None}


SYNTHETIC_POINTS = [
    {  # three tiers, single records: the CPU tiers' worst case
        "target": "gateway-onnx-fp32",
        "request_set": "docstrings",
        "concurrency": 16,
        "batch_size": 1,
        "throughput_rps": 100.0,
        "cpu_s_per_record": {"preprocess": 0.001, "model": 0.01, "postprocess": 0.0005, "gateway": 0.002},
    },
    {  # batched: the model tier's best case
        "target": "gateway-onnx-fp32",
        "request_set": "docstrings",
        "concurrency": 16,
        "batch_size": 8,
        "throughput_rps": 160.0,
        "cpu_s_per_record": {"preprocess": 0.0004, "model": 0.008, "postprocess": 0.0002, "gateway": 0.0005},
    },
    {  # a lower concurrency does not count
        "target": "gateway-onnx-fp32",
        "request_set": "docstrings",
        "concurrency": 1,
        "batch_size": 1,
        "throughput_rps": 50.0,
        "cpu_s_per_record": {"preprocess": 0.01, "model": 0.02, "postprocess": 0.01, "gateway": 0.01},
    },
    {
        "target": "gateway-onnx-fp32-inline",
        "request_set": "docstrings",
        "concurrency": 16,
        "batch_size": 1,
        "throughput_rps": 120.0,
        "cpu_s_per_record": {"model": 0.009, "gateway": 0.0025},
    },
]


def test_capacity_table_from_a_synthetic_bench() -> None:
    table = capacity.capacity_table(SYNTHETIC_POINTS, "cpu")
    # A 1-CPU model pod at 8 ms per record serves 125 records/s; a 0.5-CPU preprocess pod at
    # 1 ms per record serves 500: a quarter of a preprocess pod per model pod.
    assert table["model_pod_records_per_s"] == 125.0
    assert table["pods_per_model_pod"] == {
        "preprocess": 0.25,
        "postprocess": 0.125,
        "gateway": 0.5,
        "gateway-inline": 0.625,
    }
    gpu = capacity.capacity_table(SYNTHETIC_POINTS, "cuda")
    assert gpu["model_pod_records_per_s"] == 160.0  # what the GPU model pod served, not its CPU
    tables = {"cpu": table, "gpu": gpu}
    assert capacity.replicas_for(tables, "cpu", 8, ("preprocess", "postprocess", "gateway")) == {
        "preprocess": 2,
        "postprocess": 1,
        "gateway": 4,
    }
    assert capacity.queue_target_rows(tables, "cpu") == 12  # 100 ms of a 125 records/s pod
    # Not told, two 1-CPU model pods; the CPU tiers follow them.
    unsized = k8s.Options("models:/m@a", tracking_uri="http://mlflow:5000")
    assert k8s.replicas(unsized, tables, "cpu", k8s.TIERS) == {
        "model": 2,
        "preprocess": 1,
        "postprocess": 1,
        "gateway": 1,
    }
    assert capacity.queue_target_rows(tables, "gpu") == 16


def test_committed_capacity_table_is_the_committed_bench_s() -> None:
    results = json.loads((REPO / "benchmarks" / "minilm-2cpu" / "results.json").read_text())
    committed = capacity.load()
    assert {k: v for k, v in capacity.from_bench(results).items() if k != "source"} == {
        k: v for k, v in committed.items() if k != "source"
    }
    assert capacity.load(REPO / "benchmarks" / "minilm-2cpu" / "results.json")["cpu"] == committed["cpu"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--replicas", "modle=2"],
            "error: --replicas: no tier 'modle' here (tiers: preprocess, model, postprocess, gateway)",
        ),
        (["--replicas", "model=0"], "error: --replicas model=0: replicas are a whole number, at least 1"),
        (["--capacity", "nope.json"], "error: cannot read the capacity file nope.json: No such file or directory"),
        # Issue 24: a missing --image became splitserve:latest, an image nobody publishes.
        (
            [],
            "error: --image is required: the container image every pod runs, built from deploy/Dockerfile and "
            "pushed where the cluster pulls from (e.g. --image registry.example/splitserve:1); splitserve publishes none",
        ),
        (
            ["--image", "r/s:1", "--env", "NOEQUALS"],
            "error: --env takes KEY=VALUE (KEY a variable name), not 'NOEQUALS'",
        ),
        (
            ["--image", "r/s:1", "--env-from-secret", "My_Secret"],
            "error: --env-from-secret 'My_Secret' is not a Secret's name (lower-case letters, digits, '-' and '.')",
        ),
        (
            ["--image", "r/s:1", "--rest-port", "7000"],
            "error: --rest-port 7000 is taken by the pods' gRPC or metrics port",
        ),
    ],
)
def test_everyday_mistakes_get_one_line(extra: list[str], message: str, tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "splitserve", "k8s", "models:/m/1", "--tracking-uri", "http://mlflow:5000"]
    done = subprocess.run([*argv, "--out", str(tmp_path / "t"), *extra], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode != 0
    assert done.stderr.strip() == message


def restricted(pod: dict[str, Any]) -> None:
    """Kubernetes' "restricted" Pod Security Standard, as its admission checks it, plus a read-only root
    filesystem whose writable folders are emptyDirs."""
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    scratch = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    assert scratch >= {"tmp", "bundle-cache"}
    for box in pod["containers"]:
        sc = box["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["readOnlyRootFilesystem"] is True and sc.get("privileged") is not True
        mounts = {m["mountPath"]: m["name"] for m in box["volumeMounts"]}
        assert mounts["/tmp"] in scratch and mounts[k8s.workloads.CACHE_DIR] in scratch
        assert {"name": "SPLITSERVE_CACHE_DIR", "value": k8s.workloads.CACHE_DIR} in box["env"]
        # Minutes to fetch and load a bundle under a startup probe, not a 120 s liveness delay.
        assert box["startupProbe"]["grpc"]["port"] == 7000
        assert box["startupProbe"]["periodSeconds"] * box["startupProbe"]["failureThreshold"] >= 300
        assert "initialDelaySeconds" not in box["livenessProbe"] and "initialDelaySeconds" not in box["readinessProbe"]


def pods(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every pod spec by what it runs: the k8s tiers, or KServe's predictor and transformer."""
    out = {}
    for obj in objects:
        if obj["kind"] == "Deployment":
            out[obj["metadata"]["labels"]["app.kubernetes.io/component"]] = obj["spec"]["template"]["spec"]
        if obj["kind"] == "InferenceService":
            out.update({part: obj["spec"][part] for part in ("predictor", "transformer")})
    return out


@needs_kubectl
@pytest.mark.parametrize("kind", ["k8s", "kserve"])
def test_rest_credentials_and_restricted_pods(kind: str, tmp_path: Path) -> None:
    """Issue 24: the gateway's REST and OpenAI door is deployed (pods, Service, probe); `--env` reaches
    every pod and `--env-from-secret` every pod that fetches bundles (not the k8s gateway, which faces
    clients and fetches none); every pod runs restricted, with startup probes."""
    o = options("hpa")
    argv = [sys.executable, "-m", "splitserve", kind, o.bundle_uri, "--tracking-uri", o.tracking_uri]
    argv += ["--image", o.image, "--namespace", "ml", "--env", "SPLITSERVE_PRE_LOG_LEVEL=debug"]
    argv += ["--env-from-secret", "mlflow-credentials", "--env-from-secret", "s3-credentials"]
    subprocess.run([*argv, "--out", str(tmp_path / "tree")], check=True, capture_output=True, cwd=tmp_path)
    rendered = kustomize(tmp_path / "tree" / "overlays" / "cpu")
    for obj in rendered:
        validate(obj)
    gateway_part = "gateway" if kind == "k8s" else "transformer"
    for part, pod in pods(rendered).items():
        restricted(pod)
        [box] = pod["containers"]
        assert {"name": "SPLITSERVE_PRE_LOG_LEVEL", "value": "debug"} in box["env"]
        secrets = [{"secretRef": {"name": "mlflow-credentials"}}, {"secretRef": {"name": "s3-credentials"}}]
        assert box.get("envFrom") == (None if (kind, part) == ("k8s", "gateway") else secrets)
        ports = {p["name"]: p["containerPort"] for p in box["ports"]}
        if part == gateway_part:
            assert parse(kserve_appends(box["args"], "splitserve", "ml")).rest_port == 8080
            assert ports["http"] == 8080
            assert box["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
        else:
            assert "http" not in ports
    if kind == "k8s":
        service = by_key(rendered)[("Service", "splitserve-gateway")]
        assert {"name": "http", "port": 8080, "targetPort": "http", "appProtocol": "http"} in service["spec"]["ports"]
    else:  # KServe's raw deployment: the first port is the Service's 80, the others keep their number
        ports = pods(rendered)["transformer"]["containers"][0]["ports"]
        assert [p["name"] for p in ports] == ["h2c", "http"]

    no_rest = [*argv, "--no-rest", "--out", str(tmp_path / "grpc-only")]
    subprocess.run(no_rest, check=True, capture_output=True, cwd=tmp_path)
    rendered = kustomize(tmp_path / "grpc-only" / "overlays" / "cpu")
    box = pods(rendered)[gateway_part]["containers"][0]
    assert "--rest-port" not in box["args"] and "http" not in {p["name"] for p in box["ports"]}
    assert "grpc" in box["readinessProbe"]
