"""Python client for the gateway.

    from splitserve.client import Client
    with Client("127.0.0.1:50051") as client:
        results = client.predict(["Florida has nice beaches"], params={"pooling": "mean"})
        # Generation tasks: the new text as it is generated, then the whole results.
        for event in client.stream(["Once upon a time"], params={"max_new_tokens": 40}):
            if "text" in event:
                print(event["text"], end="", flush=True)

Each result is a dict: {"id": ..., <kind>: ...}, the kind being "labels", "entities",
"embedding", "filled_masks", "answers", "zero_shot" or "generated" (the generation tasks: a
list of {"generated_text", "token_ids"}), with the field names (and shapes) of transformers' pipeline
outputs inside. A bundle exported with a template answers with the template's rows instead (dicts
of JSON values, any number per record).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from protos import splitserve_pb2 as pb
from protos import splitserve_pb2_grpc as pb_grpc
from splitserve.core import codec
from splitserve.core.limits import MAX_MESSAGE_BYTES
from splitserve.tasks import answer_from_pb


class Client:
    def __init__(
        self,
        target: str,
        timeout_s: float | None = 60.0,
        token: str | None = None,
        tls_ca: str | None = None,
        tls_server_name: str | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ):
        """`token`: sent as `authorization: Bearer <token>` (a gateway with `--auth-token-file`).
        `tls_ca`: a PEM CA file; the gateway is then called over TLS and its certificate checked
        (`tls_server_name`: the name it carries, when not the target's host). `max_message_bytes`:
        the largest request sent and response accepted, the servers' limit by default (gRPC's own
        default, 4 MiB, is smaller than many responses, e.g. token embeddings)."""
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        if tls_ca is None:
            self.channel = grpc.insecure_channel(target, options=options)
        else:
            credentials = grpc.ssl_channel_credentials(root_certificates=Path(tls_ca).read_bytes())
            if tls_server_name:
                options.append(("grpc.ssl_target_name_override", tls_server_name))
            self.channel = grpc.secure_channel(target, credentials, options=options)
        self.stub = pb_grpc.GatewayStub(self.channel)
        self.timeout_s = timeout_s
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.last_timings_us: dict[str, int] = {}
        self.last_truncated: list[str] = []  # the ids of the records the last predict cut to max_length

    def predict(self, records: Any, params: dict[str, Any] | None = None, model: str = "") -> list[dict[str, Any]]:
        """Run records (strings, dicts or a DataFrame) through the split pipeline.

        Raises `splitserve.core.errors.InvalidInput` for records that cannot be encoded, and
        `grpc.RpcError` (with `.code()` and `.details()`) for what the servers refuse.
        """
        response, call = self.stub.Predict.with_call(
            codec.predict_request(records, params, model, local_files=True),
            timeout=self.timeout_s,
            metadata=self.metadata,
        )
        self.last_timings_us = _timings(call.trailing_metadata())
        self.last_truncated = list(response.truncated)
        return answer_from_pb(response)

    def stream(self, records: Any, params: dict[str, Any] | None = None, model: str = "") -> Iterator[dict[str, Any]]:
        """Like `predict`, streamed: for the generation tasks, one event per chunk of new text of a
        record, {"record": index, "id", "text", "token_ids"} (append the texts of a record to get
        its text so far), then the last event, {"results": [what predict returns]}. Other tasks:
        the last event only. Breaking out of the loop cancels the call (and the generation)."""
        call = self.stub.PredictStream(
            codec.predict_request(records, params, model, local_files=True),
            timeout=self.timeout_s,
            metadata=self.metadata,
        )
        try:
            for event in call:
                if event.WhichOneof("event") == "delta":
                    d = event.delta
                    yield {"record": d.record, "id": d.id, "text": d.text, "token_ids": list(d.token_ids)}
                else:
                    self.last_timings_us = _timings(call.trailing_metadata())
                    yield {"results": answer_from_pb(event.final)}
        finally:
            call.cancel()

    def info(self) -> dict[str, str]:
        info = self.stub.Info(pb.TierInfoRequest(), timeout=self.timeout_s, metadata=self.metadata)
        return {"model": info.model, "task": info.task, "fingerprint": info.fingerprint}

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _timings(metadata: Any) -> dict[str, int]:
    """Where a request's time went, from the gateway's trailing metadata (microseconds)."""
    return {
        k.removeprefix("splitserve-").removesuffix("-us"): int(v)
        for k, v in (metadata or ())
        if k.startswith("splitserve-") and k.endswith("-us")
    }
