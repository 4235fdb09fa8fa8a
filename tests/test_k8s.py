"""`splitserve k8s`: the manifests validate against Kubernetes' own schemas, and every container's
command line is one the CLI accepts (flags and settings as the tiers parse them)."""

from __future__ import annotations

import subprocess
import sys

import kubernetes_validate
import yaml

from splitserve import k8s
from splitserve.cli import build_parser, settings_from_args

K8S_VERSION = "1.30.0"


def test_manifests_validate_and_their_commands_parse() -> None:
    from gateway_svc.settings import GatewaySettings
    from model_svc.settings import ModelSettings
    from postprocess_svc.settings import PostprocessSettings
    from preprocess_svc.settings import PreprocessSettings

    objects = k8s.manifests(
        "models:/ner-serving@champion",
        image="registry.example/splitserve:1",
        tracking_uri="http://mlflow.example:5000",
        namespace="ml",
        replicas={"model": 2, "preprocess": 3},
        device="cuda",
    )
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    assert list(yaml.safe_load_all(k8s.to_yaml(objects))) == objects
    by_kind: dict[str, dict[str, dict]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
    assert set(by_kind) == {"Deployment", "Service", "HorizontalPodAutoscaler", "NetworkPolicy"}
    # Issue 11, defect 12: the tiers behind the gateway take calls from the gateway's pods only.
    for tier in ("preprocess", "model", "postprocess"):
        ingress = by_kind["NetworkPolicy"][f"splitserve-{tier}"]["spec"]["ingress"]
        assert ingress[0]["from"] == [
            {
                "podSelector": {
                    "matchLabels": {"app.kubernetes.io/name": "splitserve", "app.kubernetes.io/component": "gateway"}
                }
            }
        ]
    services = by_kind["Service"]
    for tier in ("preprocess", "model", "postprocess"):  # headless: the gateway balances per pod
        assert services[f"splitserve-{tier}"]["spec"]["clusterIP"] == "None"
    assert "clusterIP" not in services["splitserve-gateway"]["spec"]
    deployments = by_kind["Deployment"]
    assert deployments["splitserve-model"]["spec"]["replicas"] == 2
    model = deployments["splitserve-model"]["spec"]["template"]["spec"]["containers"][0]
    assert model["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert by_kind["HorizontalPodAutoscaler"]["splitserve-preprocess"]["spec"]["minReplicas"] == 3

    parser = build_parser()
    settings_classes = {
        "serve-preprocess": PreprocessSettings,
        "serve-postprocess": PostprocessSettings,
        "serve-model": ModelSettings,
        "serve-gateway": GatewaySettings,
    }
    for deployment in deployments.values():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        args = parser.parse_args(container["args"])
        settings = settings_from_args(settings_classes[container["args"][0]], args)
        assert settings.port == k8s.GRPC_PORT and settings.host == "0.0.0.0"
        if container["name"] == "gateway":
            assert settings.model == ["dns:///splitserve-model.ml.svc.cluster.local:7000"]


def test_cli_writes_the_manifests(tmp_path) -> None:
    out = tmp_path / "splitserve.yaml"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "splitserve",
            "k8s",
            "models:/m/1",
            "--tracking-uri",
            "http://mlflow:5000",
            "--out",
            str(out),
            "--replicas",
            "model=2",
            "--tier-tls-secret",
            "splitserve-tier-tls",
        ],
        check=True,
        capture_output=True,
    )
    objects = list(yaml.safe_load_all(out.read_text()))
    assert len(objects) == 15
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    # Issue 11, defect 12: mutual TLS between the gateway and the tiers, end to end, from one Secret.
    parser = build_parser()
    for obj in objects:
        if obj["kind"] != "Deployment":
            continue
        pod = obj["spec"]["template"]["spec"]
        assert pod["volumes"] == [{"name": "tier-tls", "secret": {"secretName": "splitserve-tier-tls"}}]
        args = parser.parse_args(pod["containers"][0]["args"])
        if pod["containers"][0]["name"] == "gateway":
            assert (args.tier_tls_ca, args.tier_tls_cert) == (f"{k8s.TLS_DIR}/ca.crt", f"{k8s.TLS_DIR}/tls.crt")
            assert args.tier_tls_server_name == "splitserve-tier"
        else:
            assert (args.tls_cert, args.tls_client_ca) == (f"{k8s.TLS_DIR}/tls.crt", f"{k8s.TLS_DIR}/ca.crt")
        if pod["containers"][0]["name"] == "model":
            assert obj["spec"]["replicas"] == 2
