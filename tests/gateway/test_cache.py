"""The gateway's response cache (`cache_bytes`) in front of real tiers: a hit answers what the miss
answered, per record (a request of 8 with 5 cached sends 3 to the tiers, answers in order), through
every door that does not stream (gRPC, REST, OpenAI's /v1/embeddings); keyed by the effective
params; hits, misses, evictions and bytes counted; bounded; a rollout to a new fingerprint never
answers from the old version's entries; sampled generation never cached."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import requests
from prometheus_client import REGISTRY

from gateway_svc.cache import entry_size
from protos import splitserve_pb2 as pb
from protos import splitserve_pb2_grpc as pb_grpc
from splitserve.core import codec
from splitserve.core.bundle import read_local
from splitserve.inprocess import InProcessPipeline
from splitserve.tasks import answer_from_pb
from tests.support.stack import Stack

TEXTS = [f"record {i}: the cat sat on mat number {i}" for i in range(8)]
NEW = ["a first new text", "another one, new", "a third new record"]
BOUND = 40_000  # bytes: the 8 texts' token vectors and a few more (tiny BERT), not 40 more
METRICS = ("hits", "misses", "evictions")


class Metrics:
    """The cache's counters since the last `delta()`, and model rows run (the tiers' share)."""

    def __init__(self) -> None:
        self.last = self._now()

    @staticmethod
    def _now() -> dict[str, float]:
        now = {m: REGISTRY.get_sample_value(f"splitserve_gateway_cache_{m}_total") or 0.0 for m in METRICS}
        now["rows"] = REGISTRY.get_sample_value("splitserve_model_batch_rows_sum") or 0.0
        return now

    def delta(self) -> dict[str, int]:
        now = self._now()
        delta = {k: int(now[k] - self.last[k]) for k in now}
        self.last = now
        return delta


def _gauge() -> float:
    return REGISTRY.get_sample_value("splitserve_gateway_cache_bytes") or 0.0


class Gateway:
    def __init__(self, channel: grpc.Channel):
        self.stub = pb_grpc.GatewayStub(channel)

    def predict(self, records: list[Any], params: dict[str, Any] | None = None) -> tuple[pb.PredictResponse, int]:
        """The answer, and how many records the cache answered (its trailer)."""
        response, call = self.stub.Predict.with_call(codec.predict_request(records, params, ""), timeout=60)
        return response, int(dict(call.trailing_metadata()).get("splitserve-cache-hits", "0"))


def _expected(local_dir: str, records: list[Any], params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return InProcessPipeline(read_local(Path(local_dir))).predict(records, params)


def _close(answer: list[dict[str, Any]], expected: list[dict[str, Any]]) -> bool:
    return [a["id"] for a in answer] == [e["id"] for e in expected] and all(
        np.shape(a["embedding"]) == np.shape(e["embedding"]) and np.allclose(a["embedding"], e["embedding"], atol=1e-4)
        for a, e in zip(answer, expected, strict=True)
    )


def _same_but_id(a: pb.Result, b: pb.Result) -> bool:
    a, b = pb.Result.FromString(a.SerializeToString()), pb.Result.FromString(b.SerializeToString())
    a.id = b.id = ""
    return a == b


def test_cache_per_record_every_door_eviction_and_rollout(tiny_bundles) -> None:
    old, new = tiny_bundles[("feature-extraction", "bert")], tiny_bundles[("feature-extraction", "roberta")]
    quick = {"retire_after_s": 0.0, "model_name": "cache-tiny"}
    gateway = {"cache_bytes": BOUND, "rest_port": 0, "tier_refresh_s": 0.1}
    texts = [TEXTS[0], NEW[0], TEXTS[2], TEXTS[3], NEW[1], TEXTS[5], NEW[2], TEXTS[7]]
    records = [{"id": f"m{i}", "text": t} for i, t in enumerate(texts)]
    # The in-process pipeline's answers (computed first: its model rows count in this process's metrics).
    expected = {
        "old": _expected(old.local_dir, TEXTS),
        "mixed": _expected(old.local_dir, records),
        "new": _expected(new.local_dir, TEXTS),
    }
    with (
        Stack(old.local_dir, pre=quick, model=quick, post=quick, gateway=gateway) as stack,
        grpc.insecure_channel(stack.gateway) as channel,
    ):
        gw, metrics = Gateway(channel), Metrics()
        cache = stack.gateway_tier.gateway.cache
        assert cache is not None

        first, hits = gw.predict(TEXTS)
        assert hits == 0 and metrics.delta() == {"hits": 0, "misses": 8, "evictions": 0, "rows": 8}
        assert _close(answer_from_pb(first), expected["old"])
        again, hits = gw.predict(TEXTS)
        assert again == first and hits == 8
        assert metrics.delta() == {"hits": 8, "misses": 0, "evictions": 0, "rows": 0}  # no tier called

        # 5 cached and 3 new, interleaved, under the caller's ids: the 3 go to the tiers, all 8 answer in order.
        mixed, hits = gw.predict(records)
        assert hits == 5 and metrics.delta() == {"hits": 5, "misses": 3, "evictions": 0, "rows": 3}
        assert [r.id for r in mixed.results] == [f"m{i}" for i in range(8)]
        assert all(_same_but_id(mixed.results[i], first.results[int(t[7])]) for i, t in enumerate(texts) if t in TEXTS)
        assert _close(answer_from_pb(mixed), expected["mixed"])

        # The REST door and OpenAI's /v1/embeddings take the same path: answered from the cache.
        body = requests.post(f"{stack.rest}/v1/predict", json={"records": TEXTS}, timeout=60)
        assert body.status_code == 200 and body.headers["splitserve-cache-hits"] == "8"
        assert body.json()["results"] == answer_from_pb(first)
        mean = {"pooling": "mean"}
        pooled, _ = gw.predict(TEXTS[:2], mean)
        assert metrics.delta() == {"hits": 8, "misses": 2, "evictions": 0, "rows": 2}
        sdk = requests.post(f"{stack.rest}/v1/embeddings", json={"input": TEXTS[:2], "params": mean}, timeout=60).json()
        assert metrics.delta()["hits"] == 2
        assert [d["embedding"] for d in sdk["data"]] == [r["embedding"] for r in answer_from_pb(pooled)]

        # Keyed by the effective params: the default spelled out is the default (once its spelling
        # is learned), another value is another entry.
        gw.predict(TEXTS[:2], {"normalize": False})  # a new spelling: learned from the tiers' answer
        assert metrics.delta()["misses"] == 2
        _, hits = gw.predict(TEXTS[2:4], {"normalize": False})
        assert hits == 2 and metrics.delta()["rows"] == 0
        normalized, hits = gw.predict(TEXTS[:2], {"pooling": "mean", "normalize": True})
        assert hits == 0 and metrics.delta()["misses"] == 2
        assert np.allclose([np.linalg.norm(r["embedding"]) for r in answer_from_pb(normalized)], 1.0, atol=1e-5)
        assert gw.predict(TEXTS[:2], {"pooling": "mean", "normalize": True}) == (normalized, 2)

        # A bad record among cached ones: refused naming it as the caller numbered it (the sub-request
        # of the misses is sent again whole), and the server keeps serving.
        with pytest.raises(grpc.RpcError) as refused:
            gw.predict([TEXTS[0], TEXTS[1], ""])
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details().startswith("record 2 (id='2'): field 'text'"), refused.value.details()
        assert gw.predict(TEXTS[:2]) == (
            pb.PredictResponse(model=first.model, fingerprint=first.fingerprint, results=first.results[:2]),
            2,
        )

        # A rollout: every tier holds the new version, the gateway switches to it: no old entry answers.
        tiers = {r.tier.name: r.tier for r in stack.running}
        for name in ("preprocess", "model", "postprocess"):
            stack._call(tiers[name].add(new.local_dir))
        fp2 = read_local(Path(new.local_dir)).fingerprint
        deadline = time.monotonic() + 30
        while stack.gateway_tier.gateway.versions.model_info("").fingerprint != fp2:
            assert time.monotonic() < deadline, "the gateway never switched to the new version"
            time.sleep(0.1)
        metrics.delta()
        rolled, hits = gw.predict(TEXTS)
        assert rolled.fingerprint == fp2 and hits == 0 and metrics.delta()["rows"] == 8
        assert _close(answer_from_pb(rolled), expected["new"])
        assert gw.predict(TEXTS) == (rolled, 8)

        # Bounded: more answers than fit push the least recently used out (the old version's first).
        assert cache.nbytes <= BOUND
        metrics.delta()
        for batch in range(6):
            gw.predict([f"batch {batch}, text {i}: " + "more words here " * 4 for i in range(8)])
        assert metrics.delta()["evictions"] > 0
        assert cache.nbytes <= BOUND and _gauge() >= cache.nbytes
        _, hits = gw.predict(TEXTS)
        assert hits < 8


def test_sampled_generation_is_never_cached(tiny_bundles) -> None:
    exported = tiny_bundles[("text-generation", "gpt2")]
    prompts = ["Angela Merkel works for", "The cat"]
    with (
        Stack(exported.local_dir, gateway={"cache_bytes": BOUND, "rest_port": 0}) as stack,
        grpc.insecure_channel(stack.gateway) as channel,
    ):
        gw, metrics = Gateway(channel), Metrics()
        cache = stack.gateway_tier.gateway.cache
        assert cache is not None
        greedy = {"do_sample": False, "max_new_tokens": 4}
        first, _ = gw.predict(prompts, greedy)
        assert gw.predict(prompts, greedy) == (first, 2)
        held = cache.nbytes
        # This bundle samples by default (its generation config): a request that does not say
        # do_sample=false samples, and is not cached either (the effective params decide).
        for sampled in ({"max_new_tokens": 4}, {"do_sample": True, "seed": 3, "max_new_tokens": 4}):
            for _ in range(3):
                _, hits = gw.predict(prompts, sampled)
                assert hits == 0
            body = requests.post(f"{stack.rest}/v1/predict", json={"records": prompts, "params": sampled}, timeout=60)
            assert body.status_code == 200 and "splitserve-cache-hits" not in body.headers
        delta = metrics.delta()
        # Greedy: 2 misses, then 2 hits; sampled: each spelling's first request, then not even looked up.
        assert (delta["hits"], delta["misses"]) == (2, 2 + 2 + 2)
        # Only what each sampled spelling resolves to is kept (to "never cached"), no answer of theirs.
        assert cache.nbytes - held == 2 * entry_size(b"")


def test_inline_stages_use_the_cache_too(tiny_bundles) -> None:
    bundle = tiny_bundles[("text-classification", "bert")].local_dir
    inline = {"inline_stages": bundle, "preprocess": [], "postprocess": [], "cache_bytes": BOUND}
    with Stack(bundle, gateway=inline) as stack, grpc.insecure_channel(stack.gateway) as channel:
        gw = Gateway(channel)
        first, _ = gw.predict(TEXTS[:3], {"top_k": None})
        assert gw.predict(TEXTS[:3], {"top_k": None}) == (first, 3)
