"""The gateway's response cache (`cache_bytes`; off by default): deterministic answers, one entry
per record, so that a request of 8 records of which 5 were answered before sends only the other 3 to
the tiers and answers all 8 in order.

A record's entry is keyed by the bundle fingerprint that answered it, the record's canonical bytes
(its id left out: a hit answers under the caller's id) and the request's effective params as the
preprocess tier resolved them (request > bundle defaults > the task's: `PreprocessResponse.
cache_params`). The tier leaves those empty when the answer must not be kept (sampled generation, a
templated bundle): such a request always goes to the tiers. What a request's params resolve to is
learned from its first answer (an entry of its own, keyed by the fingerprint and the params as sent),
so the first request with given params goes to the tiers whole.

Lookups use the fingerprint the request is pinned to (`gateway_svc.versions`): after a rollout to a
new fingerprint no old entry can answer; the old ones age out. An answer is returned only if every
record of it came from one fingerprint: a sub-request answered by another version (a rollout between
pinning and answering) sends the whole request again. A sub-request refused as invalid is sent again
whole too, so that the error names the record as the caller numbered it.

Bounded in bytes (entries' keys and answers, plus `ENTRY_OVERHEAD` each), least recently used out
first (cachetools' `LRUCache`). Hits, misses, evictions and bytes are Prometheus metrics.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import cachetools
import grpc
from prometheus_client import Counter, Gauge

from protos import splitserve_pb2 as pb
from splitserve.core.status import status_of

if TYPE_CHECKING:
    from gateway_svc.orchestrator import Call

HITS = Counter("splitserve_gateway_cache_hits_total", "Records the gateway answered from its response cache")
MISSES = Counter("splitserve_gateway_cache_misses_total", "Records the response cache did not hold, sent to the tiers")
EVICTIONS = Counter(
    "splitserve_gateway_cache_evictions_total", "Response cache entries dropped (least recently used) for room"
)
BYTES = Gauge("splitserve_gateway_cache_bytes", "Bytes the response cache holds (keys, answers, overhead)")

KEY_BYTES = 33  # a kind byte and a SHA-256 digest
ENTRY_OVERHEAD = 240  # what Python spends per entry besides the key's and the answer's bytes (measured: ~230)
TRUNCATED, WHOLE = b"t", b"w"  # an answer's first byte: was the record cut to the model's max length

Run = Callable[[pb.PredictRequest, "Call"], Awaitable[pb.PredictResponse]]


class _Entries(cachetools.LRUCache[bytes, bytes]):
    """An LRU cache bounded in bytes that counts its evictions."""

    def popitem(self) -> tuple[bytes, bytes]:
        item = super().popitem()
        EVICTIONS.inc()
        return item


class ResponseCache:
    """Per-record answers, bounded by `max_bytes`."""

    def __init__(self, max_bytes: int):
        self.entries = _Entries(max_bytes, getsizeof=entry_size)

    @property
    def nbytes(self) -> int:
        return int(self.entries.currsize)

    def get(self, key: bytes) -> bytes | None:
        return self.entries.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        """Keep `value` under `key`, evicting the least recently used entries for room (one larger
        than the whole cache is not kept)."""
        before = self.entries.currsize
        try:
            self.entries[key] = value
        except ValueError:  # larger than max_bytes
            return
        finally:
            BYTES.inc(self.entries.currsize - before)

    async def predict(
        self, request: pb.PredictRequest, call: Call, model: str, fingerprint: str, run: Run
    ) -> pb.PredictResponse:
        """Answer `request` (for `model`, pinned to `fingerprint`) from the cache where it can,
        calling `run` (the tiers) for the records it cannot."""
        ids = record_ids(request.records)
        if ids is None or any(r.extra for r in request.records):  # not one answer per id: leave it alone
            return await run(request, call)
        effective = self.get(params_key(fingerprint, request.params))
        if effective is None:  # params not seen with this version: all to the tiers, learn what they resolve to
            MISSES.inc(len(ids))
            return self._keep(request.records, ids, await run(request, call), call, request)
        if not effective:  # sampled generation, a templated bundle: never cached
            return await run(request, call)
        keys = [record_key(fingerprint, effective, r) for r in request.records]
        found = [self.get(k) for k in keys]
        missed = [i for i, value in enumerate(found) if value is None]
        HITS.inc(len(ids) - len(missed))
        MISSES.inc(len(missed))
        answers: dict[int, pb.Result] = {}
        truncated = {i for i, value in enumerate(found) if value is not None and value[:1] == TRUNCATED}
        response_model = model
        if len(missed) == len(ids):
            response = self._keep(request.records, ids, await run(request, call), call, request)
            call.trailing = (*call.trailing, ("splitserve-cache-hits", "0"))
            return response
        if missed:
            sub = pb.PredictRequest(model=request.model, params=request.params)
            sub.records.extend(_with_id(request.records[i], ids[i]) for i in missed)
            try:
                response = await run(sub, call)
            except Exception as exc:
                if status_of(exc)[0] != grpc.StatusCode.INVALID_ARGUMENT:
                    raise
                return await run(request, call)  # the error names the record by its index in the request
            if response.fingerprint != fingerprint or len(response.results) != len(missed):
                return await run(request, call)  # another version answered (a rollout): never mix them
            self._keep(sub.records, [ids[i] for i in missed], response, call, request)
            cut = set(response.truncated)
            for i, result in zip(missed, response.results, strict=True):
                answers[i] = result
                if ids[i] in cut:
                    truncated.add(i)
            response_model = response.model
        for i, value in enumerate(found):
            if value is not None:
                result = pb.Result.FromString(value[1:])
                result.id = ids[i]
                answers[i] = result
        call.trailing = (*call.trailing, ("splitserve-cache-hits", str(len(ids) - len(missed))))
        return pb.PredictResponse(
            model=response_model,
            fingerprint=fingerprint,
            results=[answers[i] for i in range(len(ids))],
            truncated=[ids[i] for i in sorted(truncated)],
        )

    def _keep(
        self, records: Any, ids: list[str], response: pb.PredictResponse, call: Call, request: pb.PredictRequest
    ) -> pb.PredictResponse:
        """Keep what the tiers answered for `records`: the effective params of `request`'s params
        (`call.cache_params`, empty: never cached) and, if cached, each record's answer; all under
        the fingerprint that answered."""
        fingerprint, effective = response.fingerprint, call.cache_params.encode()
        self.put(params_key(fingerprint, request.params), effective)
        if effective and not response.rows and len(response.results) == len(ids):
            cut = set(response.truncated)
            for record, record_id, result in zip(records, ids, response.results, strict=True):
                flag = TRUNCATED if record_id in cut else WHOLE
                self.put(record_key(fingerprint, effective, record), flag + result.SerializeToString())
        return response


def entry_size(value: bytes) -> int:
    return KEY_BYTES + len(value) + ENTRY_OVERHEAD


def params_key(fingerprint: str, params: Any) -> bytes:
    """The entry that holds what `params` (as sent) resolve to in bundle version `fingerprint`."""
    digest = hashlib.sha256(fingerprint.encode())
    digest.update(b"\0" + params.SerializeToString(deterministic=True))
    return b"p" + digest.digest()


def record_key(fingerprint: str, effective: bytes, record: pb.Record) -> bytes:
    """The entry of one record's answer: the bundle version, the effective params, the record
    (every field but its id, which the answer only echoes)."""
    digest = hashlib.sha256(fingerprint.encode())
    digest.update(b"\0" + effective + b"\0")
    digest.update(_with_id(record, "").SerializeToString(deterministic=True))
    return b"r" + digest.digest()


def record_ids(records: Any) -> list[str] | None:
    """Each record's id as the tiers give it (its own, else its index); None if two are the same."""
    ids = [r.id or str(i) for i, r in enumerate(records)]
    return ids if len(set(ids)) == len(ids) else None


def _with_id(record: pb.Record, record_id: str) -> pb.Record:
    copy = pb.Record()
    copy.CopyFrom(record)
    copy.id = record_id
    return copy
