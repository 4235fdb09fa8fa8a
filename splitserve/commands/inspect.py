"""`splitserve inspect BUNDLE_URI`: what a bundle serves and, for every request param, the default
a request without it gets and where that default came from (`export --set`, the source model's
MLflow signature or model_config, the template, the model's generation_config, the pipeline)."""

from __future__ import annotations

import json
from typing import Any

from splitserve import tasks
from splitserve.core.bundle import load_bundle
from splitserve.stages.template import load_template


def describe(uri: str) -> dict[str, Any]:
    bundle = load_bundle(uri, ("template",))
    config = bundle.config
    task = tasks.get(config.task)
    template = load_template(bundle, tokenizer=None)
    resolved = task.resolve(config, {})
    model_defaults = config.generation.defaults if config.generation else {}

    def origin(name: str) -> str:
        if name in config.defaults_from:
            return config.defaults_from[name]
        return "generation_config" if model_defaults.get(name) is not None else "pipeline"

    params = [
        {"name": p.name, "default": resolved[p.name], "from": origin(p.name), "type": p.kind} for p in task.params
    ]
    if template is not None:
        params += [
            {"name": p.name, "default": p.default, "from": "template PARAMS", "type": p.kind} for p in template.params
        ]
    return {
        "bundle": uri,
        "name": config.name,
        "task": config.task,
        "llm_task": config.llm_task,  # MLflow's llm/v1 schemas in the pyfunc (splitserve.llm_schema)
        "fingerprint": config.fingerprint,
        "source_model_uri": config.source_model_uri,
        "template": config.template,
        "max_length": config.max_length,
        "quantization": config.quantization,
        "quantization_weights": config.quantization_weights,  # the kept int8 candidate's format
        "quantization_excluded": config.quantization_excluded,
        "prompt_template": config.prompt_template,
        "parity": config.parity,
        "params": params,
    }


def show(facts: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    shown = dict(facts)
    if facts["quantization_weights"]:  # the kept int8 candidate's format beside the quantization
        shown["quantization"] = f"{facts['quantization']} ({facts['quantization_weights']})"
    for key in (
        "bundle",
        "name",
        "task",
        "llm_task",
        "fingerprint",
        "source_model_uri",
        "template",
        "max_length",
        "quantization",
    ):
        if shown[key] is not None:
            console.print(f"[bold]{key}[/]: {shown[key]}")
    if facts.get("quantization_excluded"):
        console.print(f"[bold]kept in fp32[/]: {', '.join(facts['quantization_excluded'])}")
    table = Table(title="Request params: the default a request without them gets, and where it came from")
    for column in ("param", "default", "from", "type"):
        table.add_column(column)
    for p in facts["params"]:
        table.add_row(p["name"], json.dumps(p["default"]), p["from"], p["type"])
    console.print(table)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "inspect",
        help="What a bundle serves, and each request param's default and its origin.",
        description=__doc__,
    )
    p.add_argument("bundle_uri", help="Serving bundle URI.")
    p.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    p.set_defaults(func=run)


def run(args: Any) -> int:
    from splitserve.mlflow_env import ensure_tracking_uri

    ensure_tracking_uri()
    facts = describe(args.bundle_uri)
    if args.json:
        print(json.dumps(facts, ensure_ascii=False))
    else:
        show(facts)
    return 0
