"""OpenTelemetry: one request's spans form one tree, gateway -> preprocess, model (queue,
inference), postprocess, under the caller's `traceparent`; with no OTEL_* environment, tracing is
off and OpenTelemetry is not even imported."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from splitserve.client import Client
from splitserve.core import tracing
from tests.support.stack import Stack

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    assert tracing.configure("splitserve-test", exporter=exporter)
    yield exporter
    tracing.shutdown()


@pytest.mark.parametrize("inline", [False, True])
def test_one_request_is_one_span_tree(tiny_bundles, spans, inline: bool) -> None:
    bundle = tiny_bundles[("feature-extraction", "bert")].local_dir
    gateway = {"inline_stages": bundle, "preprocess": [], "postprocess": []} if inline else {}
    with Stack(bundle, gateway=gateway) as stack, Client(stack.gateway) as client:
        client.metadata = (("traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"),)
        client.predict(["Angela Merkel visited Paris", "hello"])
        spans.clear()  # the gateway's start-up calls (Info) are not this request's
        client.predict(["Angela Merkel visited Paris"])
    finished = [s for s in spans.get_finished_spans() if "Info" not in s.name]
    assert {format(s.context.trace_id, "032x") for s in finished} == {CALLER_TRACE}
    by_id = {s.context.span_id: s for s in finished}

    def children(span) -> list[str]:
        return sorted(s.name for s in finished if s.parent is not None and s.parent.span_id == span.context.span_id)

    [root] = [s for s in finished if s.parent is not None and s.parent.span_id not in by_id]
    assert root.name == "splitserve.v1.Gateway/Predict"
    assert format(root.parent.span_id, "016x") == CALLER_SPAN
    assert root.attributes["rpc.grpc.status_code"] == 0
    if inline:
        assert children(root) == [
            "inference.GRPCInferenceService/ModelInfer",
            "postprocess Postprocess (inline)",
            "preprocess Preprocess (inline)",
        ]
    else:
        assert children(root) == [
            "inference.GRPCInferenceService/ModelInfer",
            "splitserve.v1.Postprocess/Postprocess",
            "splitserve.v1.Preprocess/Preprocess",
        ]
    [model] = [s for s in finished if s.name == "inference.GRPCInferenceService/ModelInfer"]
    assert children(model) == ["inference", "queue"]
    queue, inference = sorted((s for s in finished if s.name in ("queue", "inference")), key=lambda s: s.start_time)
    assert queue.name == "queue" and queue.end_time == inference.start_time
    assert model.start_time <= queue.start_time and inference.end_time <= model.end_time
    tiers = {s.name: s.attributes.get("splitserve.tier") for s in finished}
    assert tiers["splitserve.v1.Gateway/Predict"] == "gateway"
    assert tiers["inference.GRPCInferenceService/ModelInfer"] == "model"


def test_off_by_default_and_nothing_imported() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    code = (
        "import sys\n"
        "import gateway_svc.server, model_svc.server, preprocess_svc.server, postprocess_svc.server\n"
        "from splitserve.core import tracing\n"
        "assert not tracing.configure('splitserve-x') and not tracing.enabled()\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')], 'opentelemetry imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


@pytest.mark.parametrize(
    ("env", "wanted"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
    ],
)
def test_the_otel_environment_turns_it_on(monkeypatch, env: dict[str, str], wanted: bool) -> None:
    for key in list(os.environ):
        if key.startswith("OTEL_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert tracing.wanted() is wanted
    try:
        assert tracing.configure("splitserve-x") is wanted
        assert tracing.enabled() is wanted
    finally:
        tracing.shutdown()
