"""Python client for the gateway.

    from splitserve.client import Client
    with Client("127.0.0.1:50051") as client:
        results = client.predict(["Florida has nice beaches"], params={"pooling": "mean"})
        # Generation tasks: the new text as it is generated, then the whole results.
        for event in client.stream(["Once upon a time"], params={"max_new_tokens": 40}):
            if "text" in event:
                print(event["text"], end="", flush=True)

Each result is a dict: {"id": ..., <kind>: ...}, the kind being "labels" (audio-classification's
too), "entities", "embedding", "filled_masks", "answers", "zero_shot", "generated" (the generation
tasks: a list of {"generated_text", "token_ids"}), "transcription" (automatic-speech-recognition) or
"table_answer" (table-question-answering: {"answer", "coordinates", "cells", "aggregator"}),
with the field names (and shapes) of transformers' pipeline
outputs inside. A bundle exported with a template answers with the template's rows instead (dicts
of JSON values, any number per record).

`rerank(query, documents)` and `score(text_1, text_2)` score pairs of texts (a cross-encoder bundle
as `CrossEncoder.predict` does, an embedding bundle by cosine): [{"index", "score", "truncated"}];
`tokenize(texts)` and `decode(ids)` use the bundle's tokenizer.

Every error is one of `splitserve.errors` (`InvalidInput`, `NotFound`, `Overloaded`,
`DeadlineExceeded`, `Unauthenticated`, `BundleMismatch`, `Unavailable`, `ServerError`; base
`SplitServeError`), with the gRPC code and the server's message; each is also a `grpc.RpcError`.
A call the gateway answers UNAVAILABLE (restarting, not ready yet) is retried with backoff within
its deadline, as every call is idempotent: a gateway restart under `splitserve up` is not seen.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc

from protos import splitserve_pb2 as pb
from protos import splitserve_pb2_grpc as pb_grpc
from splitserve import errors
from splitserve.core import codec
from splitserve.core.errors import SplitServeError
from splitserve.core.limits import MAX_MESSAGE_BYTES
from splitserve.tasks import answer_from_pb

T = TypeVar("T")
# Pauses between tries of a call answered UNAVAILABLE: the first, and the longest (each doubles, with jitter).
RETRY_BACKOFF_S = (0.05, 1.0)
# A client that never reached its gateway retries this long at most (a wrong address fails in
# seconds, not at the deadline); once it has, retries go on until the call's deadline (a call
# without one: NO_DEADLINE_RETRY_S).
FIRST_CONTACT_RETRY_S = 2.0
NO_DEADLINE_RETRY_S = 60.0
# How soon a broken connection is tried again (gRPC's default starts at 1 s and grows past 2 min).
RECONNECT_BACKOFF_MS = (100, 1000)


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
        """`target`: the gateway's host:port, or unix:PATH (a gateway listening on a Unix-domain
        socket). `token`: sent as `authorization: Bearer <token>` (a gateway with `--auth-token-file`).
        `tls_ca`: a PEM CA file; the gateway is then called over TLS and its certificate checked
        (`tls_server_name`: the name it carries, when not the target's host). `max_message_bytes`:
        the largest request sent and response accepted, the servers' limit by default (gRPC's own
        default, 4 MiB, is smaller than many responses, e.g. token embeddings)."""
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0]),
            ("grpc.min_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0]),
            ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[1]),
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
        self.reached = False  # whether the gateway ever answered this client

    def predict(self, records: Any, params: dict[str, Any] | None = None, model: str = "") -> list[dict[str, Any]]:
        """Run records (strings, dicts or a DataFrame) through the split pipeline.

        Raises one of `splitserve.errors` (see there): for records the client cannot encode, and
        for whatever the servers answer instead of results."""
        request = _request(records, params, model)

        def attempt(timeout: float | None) -> Any:
            return self.stub.Predict.with_call(request, timeout=timeout, metadata=self.metadata)

        response, call = self._retried(attempt)
        self.last_timings_us = _timings(call.trailing_metadata())
        self.last_truncated = list(response.truncated)
        return answer_from_pb(response)

    def stream(self, records: Any, params: dict[str, Any] | None = None, model: str = "") -> Iterator[dict[str, Any]]:
        """Like `predict`, streamed: for the generation tasks, one event per chunk of new text of a
        record, {"record": index, "id", "text", "token_ids"} (append the texts of a record to get
        its text so far), then the last event, {"results": [what predict returns]}. Other tasks:
        the last event only. Breaking out of the loop cancels the call (and the generation). A call
        answered UNAVAILABLE before its first event is retried as `predict` is."""
        request = _request(records, params, model)
        started = time.monotonic()
        tries = 0
        while True:
            call = self.stub.PredictStream(request, timeout=self._left(started), metadata=self.metadata)
            yielded = False
            try:
                for event in call:
                    self.reached = yielded = True
                    if event.WhichOneof("event") == "delta":
                        d = event.delta
                        yield {"record": d.record, "id": d.id, "text": d.text, "token_ids": list(d.token_ids)}
                    else:
                        self.last_timings_us = _timings(call.trailing_metadata())
                        yield {"results": answer_from_pb(event.final)}
                return
            except grpc.RpcError as exc:
                if yielded or not self._pause(exc, started, tries):
                    raise errors.from_rpc_error(exc) from None
                tries += 1
            finally:
                call.cancel()

    def rerank(
        self,
        query: str,
        documents: list[str],
        top_n: int | None = None,
        return_documents: bool = False,
        raw_scores: bool = False,
        params: dict[str, Any] | None = None,
        model: str = "",
    ) -> list[dict[str, Any]]:
        """The documents scored against the query, best first: [{"index", "score", "truncated"[,
        "document"]}] (a cross-encoder's score as CrossEncoder.predict gives it, `raw_scores`: its
        logit; an embedding model's: the cosine)."""
        request = pb.RerankRequest(
            model=model,
            query=query,
            documents=documents,
            top_n=top_n,
            return_documents=return_documents,
            raw_scores=raw_scores,
            params=codec.params_to_struct(params),
        )
        return _scored(
            self._retried(lambda timeout: self.stub.Rerank(request, timeout=timeout, metadata=self.metadata))
        )

    def score(
        self,
        text_1: str | list[str],
        text_2: str | list[str],
        raw_scores: bool = False,
        params: dict[str, Any] | None = None,
        model: str = "",
    ) -> list[dict[str, Any]]:
        """Pairs scored in order (one text_1 with each text_2, or text_1[i] with text_2[i])."""
        request = pb.ScoreRequest(
            model=model,
            text_1=[text_1] if isinstance(text_1, str) else text_1,
            text_2=[text_2] if isinstance(text_2, str) else text_2,
            raw_scores=raw_scores,
            params=codec.params_to_struct(params),
        )
        return _scored(self._retried(lambda timeout: self.stub.Score(request, timeout=timeout, metadata=self.metadata)))

    def tokenize(
        self, texts: list[str], add_special_tokens: bool = True, model: str = ""
    ) -> list[list[dict[str, Any]]]:
        """Each text's tokens: [{"id", "text", "special", "start", "stop"}] (offsets in characters; None
        for a special token)."""
        request = pb.TokenizeRequest(model=model, inputs=texts, add_special_tokens=add_special_tokens)
        response = self._retried(lambda timeout: self.stub.Tokenize(request, timeout=timeout, metadata=self.metadata))
        return codec.tokens_plain(response)

    def decode(self, ids: list[list[int]], skip_special_tokens: bool = True, model: str = "") -> list[str]:
        request = pb.DecodeRequest(
            model=model, ids=[pb.TokenIds(ids=row) for row in ids], skip_special_tokens=skip_special_tokens
        )
        response = self._retried(lambda timeout: self.stub.Decode(request, timeout=timeout, metadata=self.metadata))
        return list(response.texts)

    def info(self) -> dict[str, str]:
        info = self._retried(
            lambda timeout: self.stub.Info(pb.TierInfoRequest(), timeout=timeout, metadata=self.metadata)
        )
        return {"model": info.model, "task": info.task, "fingerprint": info.fingerprint}

    def _retried(self, attempt: Callable[[float | None], T]) -> T:
        """`attempt(timeout)` until it is answered other than UNAVAILABLE or the retry window ends;
        what the servers refuse as one of `splitserve.errors`."""
        started = time.monotonic()
        tries = 0
        while True:
            try:
                result = attempt(self._left(started))
                self.reached = True
                return result
            except grpc.RpcError as exc:
                if not self._pause(exc, started, tries):
                    raise errors.from_rpc_error(exc) from None
                tries += 1

    def _left(self, started: float) -> float | None:
        return None if self.timeout_s is None else max(self.timeout_s - (time.monotonic() - started), 0.001)

    def _pause(self, exc: grpc.RpcError, started: float, tries: int) -> bool:
        """After a failed try: sleep and say True if it is to be tried again (UNAVAILABLE, within
        the deadline; FIRST_CONTACT_RETRY_S at most before the gateway first answered)."""
        code = exc.code()  # type: ignore[attr-defined]
        if code != grpc.StatusCode.UNAVAILABLE:
            self.reached = True  # a server answered
            return False
        window = self.timeout_s if self.timeout_s is not None else NO_DEADLINE_RETRY_S
        if not self.reached:
            window = min(window, FIRST_CONTACT_RETRY_S)
        pause = min(RETRY_BACKOFF_S[0] * 2**tries, RETRY_BACKOFF_S[1]) * random.uniform(0.5, 1.0)
        if time.monotonic() - started + pause >= window:
            return False
        time.sleep(pause)
        return True

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _request(records: Any, params: dict[str, Any] | None, model: str) -> pb.PredictRequest:
    try:
        return codec.predict_request(records, params, model, local_files=True)
    except SplitServeError as exc:  # the client's own checks, as the family's errors
        raise errors.from_local(exc) from None


def _scored(scores: pb.Scores) -> list[dict[str, Any]]:
    out = []
    for r in scores.results:
        result: dict[str, Any] = {"index": r.index, "score": r.score, "truncated": r.truncated}
        if r.HasField("document"):
            result["document"] = r.document
        out.append(result)
    return out


def _timings(metadata: Any) -> dict[str, int]:
    """Where a request's time went, from the gateway's trailing metadata (microseconds)."""
    return {
        k.removeprefix("splitserve-").removesuffix("-us"): int(v)
        for k, v in (metadata or ())
        if k.startswith("splitserve-") and k.endswith("-us")
    }
