"""Zero-error rollouts: a registry alias moves under load, every tier follows it (`watch_alias`).

Two versions of one registered model whose answers differ (a tiny BERT and a tiny RoBERTa
feature extractor: other tokenizers, other widths), so the version behind every answer is known:
it must equal, exactly as the in-process pipeline computes it, the answer of the version whose
fingerprint the gateway reports. Counted: errors, wrong answers, answers per version; printed.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from protos import splitserve_pb2_grpc as pb_grpc
from splitserve.core import codec
from splitserve.core.bundle import read_local
from splitserve.inprocess import InProcessPipeline
from splitserve.tasks import answer_from_pb
from tests.support.stack import Stack

RECORDS = ["Angela Merkel visited Paris", "hello world, the cat sat on the mat"]
NAME = "rollout-tiny"


def _register(mlflow_store: Path, *bundle_uris: str) -> list[str]:
    import mlflow

    return [mlflow.register_model(uri, NAME).version for uri in bundle_uris]


def _expected(local_dir: str) -> tuple[str, list[dict[str, Any]]]:
    bundle = read_local(Path(local_dir))
    return bundle.fingerprint, InProcessPipeline(bundle).predict(RECORDS)


def _same(answer: list[dict[str, Any]], expected: list[dict[str, Any]]) -> bool:
    return [a["id"] for a in answer] == [e["id"] for e in expected] and all(
        np.shape(a["embedding"]) == np.shape(e["embedding"]) and np.allclose(a["embedding"], e["embedding"], atol=1e-4)
        for a, e in zip(answer, expected, strict=True)
    )


class Load:
    """Client threads calling the gateway as fast as they can; every answer checked."""

    def __init__(self, target: str, expected: dict[str, list[dict[str, Any]]], threads: int = 3):
        self.target, self.expected = target, expected
        self.answers: dict[str, int] = dict.fromkeys(expected, 0)
        self.errors: list[str] = []
        self.wrong: list[str] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        with grpc.insecure_channel(self.target) as channel:
            stub = pb_grpc.GatewayStub(channel)
            request = codec.predict_request(RECORDS, None, "")
            while not self.stop.is_set():
                try:
                    response = stub.Predict(request, timeout=30)
                except grpc.RpcError as exc:
                    with self.lock:
                        self.errors.append(f"{exc.code().name}: {exc.details()}")
                    continue
                answer = answer_from_pb(response)
                with self.lock:
                    expected = self.expected.get(response.fingerprint)
                    if expected is None or not _same(answer, expected):
                        self.wrong.append(response.fingerprint)
                    else:
                        self.answers[response.fingerprint] += 1

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def count(self, fingerprint: str) -> int:
        with self.lock:
            return self.answers[fingerprint]


def _wait(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.1)


def test_alias_move_under_load(tiny_bundles, mlflow_store, capsys) -> None:
    from mlflow import MlflowClient

    old, new = tiny_bundles[("feature-extraction", "bert")], tiny_bundles[("feature-extraction", "roberta")]
    v1, v2 = _register(mlflow_store, old.bundle_uri, new.bundle_uri)
    registry = MlflowClient()
    registry.set_registered_model_alias(NAME, "champion", v1)
    (fp1, answer1), (fp2, answer2) = _expected(old.local_dir), _expected(new.local_dir)
    assert fp1 != fp2 and not _same(answer1, answer2)

    watch = {"watch_alias": True, "watch_interval_s": 1.0, "retire_after_s": 1.0}
    uri = f"models:/{NAME}@champion"
    with Stack(uri, pre=watch, model=watch, post=watch, gateway={"tier_refresh_s": 0.2}) as stack:
        tiers = [r.tier for r in stack.running if r.tier.name != "gateway"]
        assert [[v.fingerprint for v in t.versions] for t in tiers] == [[fp1]] * 3
        with Load(stack.gateway, {fp1: answer1, fp2: answer2}) as load:
            _wait(lambda: load.count(fp1) >= 20, 60, "answers from the first version")
            moved = time.monotonic()
            registry.set_registered_model_alias(NAME, "champion", v2)
            _wait(lambda: load.count(fp2) >= 20, 120, "answers from the second version")
            switched = time.monotonic() - moved
            # Then each tier unloads the old version, which no request uses any more.
            _wait(lambda: all([v.fingerprint for v in t.versions] == [fp2] for t in tiers), 60, "v1 unloaded")
            after = load.count(fp1)
            _wait(lambda: load.count(fp2) >= 40, 60, "more answers after the unload")
            assert load.count(fp1) == after  # nothing answers from the old version once unloaded
        with capsys.disabled():
            print(
                f"\nalias moved under load: {sum(load.answers.values())} answers, {len(load.errors)} errors, "
                f"{len(load.wrong)} wrong; v1 {load.answers[fp1]}, v2 {load.answers[fp2]}; "
                f"every tier on v2 {switched:.1f}s after the move"
            )
    assert load.errors == [] and load.wrong == []
    assert load.answers[fp1] >= 20 and load.answers[fp2] >= 40


@pytest.mark.parametrize("order", [("model", "preprocess", "postprocess"), ("postprocess", "preprocess", "model")])
def test_rolling_update_in_any_order(tiny_bundles, order) -> None:
    """Tiers given the new version one by one: the gateway answers from the old version until every
    tier holds the new one, then from the new one; then the old one is unloaded. Never an error,
    never a mix."""
    old, new = tiny_bundles[("feature-extraction", "bert")], tiny_bundles[("feature-extraction", "roberta")]
    (fp1, answer1), (fp2, answer2) = _expected(old.local_dir), _expected(new.local_dir)
    quick = {"retire_after_s": 0.0, "model_name": NAME}
    with (
        Stack(old.local_dir, pre=quick, model=quick, post=quick, gateway={"tier_refresh_s": 0.1}) as stack,
        grpc.insecure_channel(stack.gateway) as channel,
    ):
        tiers = {r.tier.name: r.tier for r in stack.running}
        stub = pb_grpc.GatewayStub(channel)
        request = codec.predict_request(RECORDS, None, "")

        def answers(fingerprint: str, expected: list[dict[str, Any]]) -> None:
            time.sleep(0.3)  # the gateway's next refresh
            for _ in range(3):
                response = stub.Predict(request, timeout=30)
                assert response.fingerprint == fingerprint
                assert _same(answer_from_pb(response), expected)

        for i, name in enumerate(order):
            stack._call(tiers[name].add(new.local_dir))
            assert [v.fingerprint for v in tiers[name].versions] == [fp2, fp1]
            if i < len(order) - 1:
                answers(fp1, answer1)
                assert stack._call(tiers[name].retire()) == []  # the new one served nothing yet
        answers(fp2, answer2)
        for name in order:
            assert stack._call(tiers[name].retire()) == [fp1]
            assert [v.fingerprint for v in tiers[name].versions] == [fp2]
        answers(fp2, answer2)
