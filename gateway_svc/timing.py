"""Where each request's time went, sent back beside the answer (gRPC trailing metadata, HTTP
response headers): `splitserve-<stage>-us` for the preprocess, model and postprocess hops (`model`
is the whole hop) and the gateway's own share; `queue` and `inference`, the model tier's own split
of its hop; `splitserve-input-tokens`, the prompt's tokens as the model tier counted them."""

from __future__ import annotations

from protos import grpc_predict_v2_pb2 as oip


def timing_metadata(
    stages: dict[str, float], total: float, infer: oip.ModelInferResponse
) -> tuple[tuple[str, str], ...]:
    """`stages`: seconds per hop; `total`: the request's seconds in the gateway; `infer`: the model
    tier's answer (its own split of the time, its token count)."""
    return (
        *((f"splitserve-{name}-us", str(int(seconds * 1e6))) for name, seconds in stages.items()),
        ("splitserve-gateway-us", str(int((total - sum(stages.values())) * 1e6))),
        *(
            (f"splitserve-{name}-us", str(infer.parameters[f"{name}_us"].int64_param))
            for name in ("queue", "inference")
            if f"{name}_us" in infer.parameters
        ),
        *(
            (("splitserve-input-tokens", str(infer.parameters["input_tokens"].int64_param)),)
            if "input_tokens" in infer.parameters
            else ()
        ),
    )
