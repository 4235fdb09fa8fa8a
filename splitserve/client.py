"""Python client for the gateway.

    from splitserve.client import Client
    with Client("127.0.0.1:50051") as client:
        results = client.predict(["Florida has nice beaches"], params={"pooling": "mean"})

Each result is a dict: {"id": ..., <kind>: ...}, the kind being "labels", "entities",
"embedding", "filled_masks", "answers", "zero_shot" or "generated" (text-generation: a list of
{"generated_text", "token_ids"}), with the field names (and shapes) of transformers' pipeline
outputs inside.
"""

from __future__ import annotations

from typing import Any

import grpc

from protos import splitserve_pb2 as pb
from protos import splitserve_pb2_grpc as pb_grpc
from splitserve import codec
from splitserve.records import to_records


class Client:
    def __init__(self, target: str, timeout_s: float | None = 60.0):
        self.channel = grpc.insecure_channel(target)
        self.stub = pb_grpc.GatewayStub(self.channel)
        self.timeout_s = timeout_s
        self.last_timings_us: dict[str, int] = {}

    def predict(self, records: Any, params: dict[str, Any] | None = None, model: str = "") -> list[dict[str, Any]]:
        """Run records (strings, dicts or a DataFrame) through the split pipeline.

        Raises `splitserve.errors.InvalidInput` for records that cannot be encoded, and
        `grpc.RpcError` (with `.code()` and `.details()`) for what the servers refuse.
        """
        request = pb.PredictRequest(
            model=model,
            records=codec.records_to_pb(to_records(records)),
            params=codec.params_to_struct(params),
        )
        response, call = self.stub.Predict.with_call(request, timeout=self.timeout_s)
        self.last_timings_us = {
            k.removeprefix("splitserve-").removesuffix("-us"): int(v)
            for k, v in (call.trailing_metadata() or ())
            if k.startswith("splitserve-")
        }
        return [codec.result_from_pb(r) for r in response.results]

    def info(self) -> dict[str, str]:
        info = self.stub.Info(pb.TierInfoRequest(), timeout=self.timeout_s)
        return {"model": info.model, "task": info.task, "fingerprint": info.fingerprint}

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
