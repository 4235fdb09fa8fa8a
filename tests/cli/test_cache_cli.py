"""`--cache-bytes` from the CLI in fresh processes: `splitserve up` hands it to its gateway, whose
repeated answers then come from the response cache; a negative bound is one clear line."""

from __future__ import annotations

import grpc

from protos import splitserve_pb2_grpc as pb_grpc
from splitserve.core import codec
from tests.support.cli import one_error_line, run, up


def test_up_with_a_response_cache(tiny_bundles) -> None:
    bundle = tiny_bundles[("text-classification", "bert")].bundle_uri
    one_error_line(run("up", bundle, "--cache-bytes", "-1"), "--cache-bytes -1")
    one_error_line(run("serve-gateway", "--model", "127.0.0.1:1", "--inline-stages", bundle, "--cache-bytes", "-1"))
    request = codec.predict_request(["Florida has nice beaches", "the cat sat"], {"top_k": None})
    with (
        up(bundle, "--cache-bytes", "1000000", "--no-rest") as addresses,
        grpc.insecure_channel(addresses["gateway"]) as channel,
    ):
        stub = pb_grpc.GatewayStub(channel)
        answers = []
        for _ in range(2):
            response, call = stub.Predict.with_call(request, timeout=60)
            answers.append((response, dict(call.trailing_metadata()).get("splitserve-cache-hits", "0")))
    assert answers[0][1] == "0" and answers[1] == (answers[0][0], "2")
