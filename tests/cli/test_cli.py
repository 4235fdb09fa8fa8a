"""The everyday failures a new user met, each from the CLI in a fresh process: one clear line, no
traceback, and before anything starts where it can be known then. Issue 11."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.support.cli import one_error_line, run, up


@pytest.mark.parametrize(
    ("task", "arch", "text", "params"),
    [
        ("token-classification", "bert", "Angela Merkel visited Paris", ["--param", "aggregation_strategy=simple"]),
        ("text-generation", "gpt2", "Once upon a time", ["--param", "do_sample=false", "--param", "max_new_tokens=4"]),
    ],
)
def test_inline_stages_from_the_cli(tiny_bundles, task, arch, text, params) -> None:
    """`--inline-stages` crashed at start for token-classification and text-generation ("cannot
    import name 'AutoTokenizer' from 'transformers'": both stages imported transformers at once, in
    two threads); the tests only ran it inside an already-warm process."""
    bundle = tiny_bundles[(task, arch)].bundle_uri
    with up(bundle, "--inline-stages") as addresses:
        out = run("predict", "--target", addresses["gateway"], *params, text)  # the text after the params
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(json.loads(out.stdout)) == 1


def test_up_refuses_what_it_can_check_before_starting(tiny_bundles) -> None:
    exported = tiny_bundles[("text-classification", "bert")]
    t = time.perf_counter()
    one_error_line(run("up", "models:/no-such-model/1"), "no-such-model")
    wrong_uri_s = time.perf_counter() - t
    one_error_line(run("up", exported.source_uri), "is a logged model, not a serving bundle", "splitserve export")
    one_error_line(run("up", "/no/such/folder"), "does not exist")
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        t = time.perf_counter()
        one_error_line(run("up", exported.bundle_uri, "--port", str(port)), f"cannot listen on port {port}")
        port_s = time.perf_counter() - t
    one_error_line(run("up", exported.bundle_uri, "--replicas", "model=0"), "expected a whole number of at least 1")
    one_error_line(
        run("up", exported.bundle_uri, "--replicas", "gpu=2"), "the tiers are preprocess, model, postprocess"
    )
    print(f"\nwrong URI refused in {wrong_uri_s:.1f}s, busy port in {port_s:.1f}s")
    assert wrong_uri_s < 60 and port_s < 30  # was: 17 s and three tracebacks; 25 s (after every tier loaded)


@pytest.fixture(scope="module")
def served(tiny_bundles):
    """`up --tier-mtls`: the gateway serves its callers as before; the tiers take only the gateway."""
    with up(tiny_bundles[("text-classification", "bert")].bundle_uri, "--tier-mtls") as addresses:
        yield addresses


def test_predict_prints_the_servers_answer_in_one_line(served) -> None:
    out = run("predict", "--target", served["gateway"], "--param", "top_k=-3", "a text")
    one_error_line(out, "error: INVALID_ARGUMENT: param 'top_k'")
    assert out.returncode == 1


def test_kv_flags_leave_positional_arguments_alone(served) -> None:
    out = run("predict", "--target", served["gateway"], "--param", "top_k=2", "first text", "second text")
    assert out.returncode == 0, out.stderr
    assert [r["id"] for r in json.loads(out.stdout)] == ["0", "1"]
    one_error_line(run("predict", "--target", served["gateway"], "--model-name", "nope", "a text"), "NOT_FOUND")


def test_help_shows_the_env_vars() -> None:
    out = run("serve-model", "--help")
    assert "[env SPLITSERVE_MODEL_MAX_BATCH_TOKENS]" in " ".join(out.stdout.split())
    out = run("serve-gateway", "--help")
    assert "SPLITSERVE_GATEWAY_MAX_IN_FLIGHT_RECORDS" in out.stdout


def test_up_tier_mtls_end_to_end(served) -> None:
    """Defect 12: the tiers behind the gateway accepted anyone. `up --tier-mtls`: they serve mutual
    TLS and take only the gateway's certificate."""
    import grpc

    from protos import splitserve_pb2 as pb
    from protos import splitserve_pb2_grpc as pb_grpc
    from splitserve.client import Client

    with Client(served["gateway"]) as client:
        assert "labels" in client.predict(["Florida has nice beaches"])[0]
    for tier in ("preprocess", "postprocess", "model"):
        with grpc.insecure_channel(served[tier][0]) as channel:
            with pytest.raises(grpc.RpcError) as info:
                pb_grpc.PreprocessStub(channel).Info(pb.TierInfoRequest(), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE, tier


def test_up_tier_transport_tcp(tiny_bundles) -> None:
    """`up` puts its tiers on Unix sockets by default (tests/cli/test_processes.py); `--tier-transport
    tcp` keeps them on loopback TCP, as before issue 25."""
    from splitserve.client import Client

    bundle = tiny_bundles[("text-classification", "bert")].bundle_uri
    with up(bundle, "--tier-transport", "tcp", "--inline-stages", "--no-rest") as addresses:
        assert addresses["model"][0].startswith("127.0.0.1:"), addresses
        with Client(addresses["gateway"]) as client:
            assert "labels" in client.predict(["Florida has nice beaches"])[0]
