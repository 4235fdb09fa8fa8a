"""`splitserve k8s` and `splitserve kserve`: manifests for one serving bundle, written as a
kustomize tree: `base/` (the CPU deployment), `overlays/cpu` (the base as is) and `overlays/gpu`
(the model tier on a GPU: `--device cuda`, a GPU limit, the GPU replica ratio), each applied with
`kubectl apply -k DIR/overlays/NAME`.

- `k8s`: per tier a Deployment, a Service, a PodDisruptionBudget and an autoscaler
  (`workloads`, `autoscaling`).
- `kserve`: an InferenceService (the model tier as predictor, the inline gateway as transformer)
  and a PodDisruptionBudget per component (`kserve`).

Replicas not given (`--replicas model=2 ...`) follow the capacity table (`capacity`): the CPU tiers
get the pods that the model pods keep busy. The overlays' patches are the difference between the
GPU objects and the base, so rendering an overlay gives exactly what `manifests(..., "cuda")` builds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from splitserve.k8s import autoscaling, capacity, kserve
from splitserve.k8s.workloads import (
    TIERS,
    TLS_DIR,
    Obj,
    Options,
    deployment,
    disruption_budget,
    labels,
    network_policies,
    service,
)

DEVICES = {"cpu": "cpu", "gpu": "cuda"}  # overlay -> the model tier's --device
__all__ = ["Options", "TIERS", "TLS_DIR", "manifests", "replicas", "tree", "write"]


def replicas(o: Options, table: dict[str, Any], device: str, tiers: tuple[str, ...]) -> dict[str, int]:
    """Given replicas, the others from the capacity table's ratio to the model pods."""
    unknown = sorted(set(o.replicas) - set(tiers))
    if unknown:
        raise ValueError(f"--replicas: no tier {', '.join(map(repr, unknown))} here (tiers: {', '.join(tiers)})")
    model = o.replicas.get("model", capacity.MODEL_PODS)
    ratio_tiers = tuple(t for t in tiers if t != "model")
    names = {t: capacity.INLINE if (t == "gateway" and "preprocess" not in tiers) else t for t in ratio_tiers}
    derived = capacity.replicas_for(table, device, model, tuple(names.values()))
    return {"model": model} | {t: derived[names[t]] for t in ratio_tiers} | o.replicas


def manifests(o: Options, kind: str, device: str, table: dict[str, Any] | None = None) -> list[Obj]:
    """Every object of one deployment (`kind` "k8s" or "kserve"; `device` "cpu" or "cuda")."""
    table = table or capacity.load()
    gpu = "gpu" if device == "cuda" else "cpu"
    queue_rows = capacity.queue_target_rows(table, gpu)
    if kind == "kserve":
        if o.watch_alias or o.bundles:
            raise ValueError(
                "--watch-alias and --bundle need the preprocess and postprocess tiers (KServe's transformer runs "
                "the stages inline): use `splitserve k8s`"
            )
        return kserve.manifests(o, device, replicas(o, table, gpu, ("model", "gateway")), queue_rows)
    counts = replicas(o, table, gpu, TIERS)
    out: list[Obj] = []
    for tier in TIERS:
        low, high = counts[tier], max(o.max_replicas, counts[tier])
        scaler = (
            autoscaling.scaled_object(o, tier, low, high, queue_rows)
            if o.autoscaler == "keda"
            else autoscaling.hpa(o, tier, low, high)
        )
        budget = disruption_budget(o, f"{o.name}-{tier}", labels(o, tier), labels(o, tier))
        out += [deployment(o, tier, device, low), service(o, tier), budget, scaler]
    return out + network_policies(o)


def merge_patch(base: Any, target: Any) -> Any:
    """What turns `base` into `target` as a merge patch (RFC 7386: lists are replaced whole, a
    null removes a key). Kustomize applies it as such to custom resources, and as a strategic
    merge to built-in ones, where a whole list merged by key gives the same result here."""
    if not (isinstance(base, dict) and isinstance(target, dict)):
        return target
    patch = {k: merge_patch(base.get(k), v) for k, v in target.items() if base.get(k) != v}
    return patch | {k: None for k in base if k not in target}


def _key(obj: Obj) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def tree(objects: dict[str, list[Obj]]) -> dict[str, Any]:
    """Files (relative path -> YAML documents) of the kustomize tree, from each overlay's objects
    (`objects["cpu"]` is the base)."""
    base = objects["cpu"]
    files: dict[str, Any] = {}
    groups: dict[str, list[Obj]] = {}
    for obj in base:
        component = obj["metadata"].get("labels", {}).get("app.kubernetes.io/component", "")
        groups.setdefault(obj["metadata"]["name"] if obj["kind"] == "InferenceService" else component, []).append(obj)
    files.update({f"base/{name}.yaml": docs for name, docs in groups.items()})
    files["base/kustomization.yaml"] = [_kustomization(resources=[f"{name}.yaml" for name in groups])]
    by_key = {_key(obj): obj for obj in base}
    for overlay, objs in objects.items():
        patches = []
        for obj in objs:
            old = by_key[_key(obj)]
            if obj == old:
                continue
            diff = merge_patch(old, obj)
            diff["metadata"] = {**diff.get("metadata", {}), "name": obj["metadata"]["name"]}
            diff["metadata"]["namespace"] = obj["metadata"]["namespace"]
            patch = {"apiVersion": obj["apiVersion"], "kind": obj["kind"], **diff}
            path = f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
            files[f"overlays/{overlay}/{path}"] = [patch]
            patches.append({"path": path})
        files[f"overlays/{overlay}/kustomization.yaml"] = [_kustomization(resources=["../../base"], patches=patches)]
    return files


def _kustomization(**fields: Any) -> Obj:
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        **{k: v for k, v in fields.items() if v},
    }


def to_yaml(docs: list[Obj]) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):  # no &anchors for objects used twice (the probes)
        def ignore_aliases(self, data: Any) -> bool:
            return True

    return "---\n".join(yaml.dump(d, Dumper=Dumper, sort_keys=False) for d in docs)


def render(o: Options, kind: str, table: dict[str, Any] | None = None) -> dict[str, Any]:
    """The whole tree for `kind` ("k8s" or "kserve")."""
    table = table or capacity.load()
    objects = {overlay: manifests(o, kind, device, table) for overlay, device in DEVICES.items()}
    if not o.image:  # checked last: the other mistakes are named first
        raise ValueError(
            "--image is required: the container image every pod runs, built from deploy/Dockerfile and pushed where "
            "the cluster pulls from (e.g. --image registry.example/splitserve:1); splitserve publishes none"
        )
    return tree(objects)


def write(files: dict[str, Any], out: Path) -> list[Path]:
    written = []
    for rel, docs in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(to_yaml(docs))
        written.append(path)
    return written
