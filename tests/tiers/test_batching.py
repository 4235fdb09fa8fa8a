"""Dynamic batching in the model tier: batched results equal unbatched ones, every caller gets its
own rows back, limits hold, a full queue is refused at once, a failed batch fails only itself."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import random
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest

from model_svc.batching import Batcher
from splitserve.client import Client
from splitserve.core.bundle import load_bundle
from splitserve.core.errors import Overloaded
from tests.support.oracle import TEXTS
from tests.support.stack import Stack

Arrays = dict[str, np.ndarray]


@contextlib.asynccontextmanager
async def batcher(
    infer: Callable[[Arrays], Arrays], token_outputs=("tokens",), **limits: Any
) -> AsyncIterator[Batcher]:
    # Padding allowed freely unless a test is about the padding limit: most tests mix lengths on purpose.
    settings = {
        "max_batch_size": 64,
        "max_batch_tokens": 4096,
        "max_queue_delay_ms": 20.0,
        "max_queue_size": 1024,
        "max_pad_fraction": 1.0,
    }
    b = Batcher(infer, token_outputs=token_outputs, **(settings | limits))
    b.start()
    try:
        yield b
    finally:
        await b.close()


def item(tag: int, rows: int, length: int, real: list[int] | None = None) -> Arrays:
    """Distinct ids per (tag, row, token); `real` gives each row's unpadded length (mask 0 past it)."""
    ids = tag * 10_000 + np.arange(rows)[:, None] * 100 + np.arange(length)[None, :] + 1
    mask = np.ones((rows, length), dtype=np.int64)
    for r, n in enumerate(real or []):
        mask[r, n:] = 0
        ids[r, n:] = 0
    return {"input_ids": ids.astype(np.int64), "attention_mask": mask}


class Echo:
    """A fake backend: a token-level echo and a row-level summary; records every call's shape."""

    def __init__(self) -> None:
        self.calls: list[Arrays] = []

    def __call__(self, inputs: Arrays) -> Arrays:
        self.calls.append(inputs)
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        return {
            "tokens": np.stack([ids, ids * 2], axis=-1).astype(np.float32),  # [rows, tokens, 2]
            "summary": np.stack([ids[:, 0], mask.sum(axis=1)], axis=1).astype(np.float32),  # [rows, 2]
        }


def assert_echo(inputs: Arrays, outputs: Arrays) -> None:
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    np.testing.assert_array_equal(outputs["tokens"], np.stack([ids, ids * 2], axis=-1))
    np.testing.assert_array_equal(outputs["summary"], np.stack([ids[:, 0], mask.sum(axis=1)], axis=1))


# --- with real ONNX graphs --------------------------------------------------------------------


def onnx_inputs(names: list[str], rows: int, length: int, pad_id: int, rng: np.random.Generator) -> Arrays:
    """Rows as preprocess sends them: padded to the request's longest row, with mask 0 there."""
    ids = rng.integers(5, 200, size=(rows, length), dtype=np.int64)
    mask = np.ones((rows, length), dtype=np.int64)
    for r in range(1, rows):
        n = int(rng.integers(1, length + 1))
        ids[r, n:], mask[r, n:] = pad_id, 0
    out = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    return {n: out[n] for n in names}


@pytest.mark.parametrize(
    ("task", "arch"),
    [("feature-extraction", "bert"), ("feature-extraction", "roberta"), ("text-classification", "bert"),
     ("token-classification", "roberta")],
)  # fmt: skip
async def test_onnx_batched_equals_unbatched(tiny_bundles, task: str, arch: str) -> None:
    from model_svc.backends.onnx import OnnxBackend

    bundle = load_bundle(tiny_bundles[(task, arch)].local_dir, ("onnx",))
    backend = OnnxBackend(bundle.onnx_path, bundle.config)
    token_outputs = bundle.config.token_outputs
    assert bool(token_outputs) == (task != "text-classification")
    rng = np.random.default_rng(0)
    pad_id = 1 if arch == "roberta" else 0
    shapes = [(1, 7), (3, 19), (2, 3), (1, 40), (4, 11), (2, 19), (1, 1)]
    items = [onnx_inputs(bundle.config.model_inputs, r, n, pad_id, rng) for r, n in shapes]
    expected = [backend.infer(i) for i in items]

    calls: list[tuple[int, int]] = []

    def infer(inputs: Arrays) -> Arrays:
        calls.append(inputs["input_ids"].shape)
        return backend.infer(inputs)

    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        async with batcher(infer, token_outputs=token_outputs, max_queue_delay_ms=200, executor=executor) as b:
            results = await asyncio.gather(*(b.submit(i) for i in items))
    assert len(calls) < len(items), calls  # really combined
    for inputs, want, got in zip(items, expected, results, strict=True):
        assert set(got.outputs) == set(want)
        real = inputs["attention_mask"].astype(bool)
        for name in want:
            assert got.outputs[name].shape == want[name].shape, (name, inputs["input_ids"].shape)
            # Token outputs: equal at real tokens (padded positions are what the mask discards).
            g, w = (
                (got.outputs[name][real], want[name][real])
                if name in token_outputs
                else (got.outputs[name], want[name])
            )
            np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-5)
    assert max(rows for rows, _ in calls) > max(rows for rows, _ in shapes)


# --- with fake backends -----------------------------------------------------------------------


async def test_concurrent_submitters_get_their_own_rows() -> None:
    echo = Echo()
    rng = random.Random(1)
    items = [item(tag, rng.randint(1, 4), rng.randint(1, 30), None) for tag in range(200)]

    async def submit(b: Batcher, inputs: Arrays) -> Any:
        await asyncio.sleep(rng.random() * 0.05)
        return await b.submit(inputs)

    async with batcher(echo, max_batch_size=16, max_batch_tokens=200, max_queue_delay_ms=5) as b:
        results = await asyncio.gather(*(submit(b, i) for i in items))
    for inputs, result in zip(items, results, strict=True):
        assert_echo(inputs, result.outputs)
    assert sum(c["input_ids"].shape[0] for c in echo.calls) == sum(i["input_ids"].shape[0] for i in items)
    assert len(echo.calls) < len(items)


async def test_padding_inside_a_request_is_kept() -> None:
    """Rows already padded by preprocess (mask 0) come back at the request's own length."""
    echo = Echo()
    short, long = item(1, 3, 5, real=[5, 2, 1]), item(2, 1, 12)
    async with batcher(echo) as b:
        got_short, got_long = await asyncio.gather(b.submit(short), b.submit(long))
    assert [c["input_ids"].shape for c in echo.calls] == [(4, 12)]
    assert got_short.outputs["tokens"].shape == (3, 5, 2) and got_long.outputs["tokens"].shape == (1, 12, 2)
    assert_echo(short, got_short.outputs)
    assert_echo(long, got_long.outputs)


async def test_limits_and_length_grouping() -> None:
    echo = Echo()
    rng = random.Random(2)
    items = [item(tag, rng.randint(1, 3), rng.randint(2, 20)) for tag in range(40)]
    async with batcher(echo, max_batch_size=8, max_batch_tokens=64, max_queue_delay_ms=100) as b:
        results = await asyncio.gather(*(b.submit(i) for i in items))
    for inputs, result in zip(items, results, strict=True):
        assert_echo(inputs, result.outputs)
    assert len(echo.calls) < len(items)
    for call in echo.calls:
        rows, length = call["input_ids"].shape
        assert rows <= 8
        assert rows * length <= 64, (rows, length)


async def test_grouping_by_length_limits_padding() -> None:
    echo = Echo()
    items = [item(1, 1, 30), item(2, 1, 2), item(3, 1, 30), item(4, 1, 2)]
    async with batcher(echo, max_batch_tokens=64) as b:
        results = await asyncio.gather(*(b.submit(i) for i in items))
    assert [c["input_ids"].shape for c in echo.calls] == [(2, 2), (2, 30)]
    for inputs, result in zip(items, results, strict=True):
        assert_echo(inputs, result.outputs)


async def test_a_request_over_the_token_budget_is_cut_within_it() -> None:
    """Issue 11, defect 1: a request's rows run in parts of at most max_batch_tokens (one row at
    least), whatever its size; it used to run as one batch (memory grew with the request)."""
    echo = Echo()
    big, small, long_rows = item(1, 7, 20), item(2, 1, 3), item(3, 2, 50)
    async with batcher(echo, max_batch_tokens=64) as b:
        got_big, got_small, got_long = await asyncio.gather(b.submit(big), b.submit(small), b.submit(long_rows))
    assert all(c["input_ids"].size <= 64 or c["input_ids"].shape[0] == 1 for c in echo.calls), echo.calls
    assert sorted(c["input_ids"].shape for c in echo.calls) == [(1, 3), (1, 20), (1, 50), (1, 50), (3, 20), (3, 20)]
    assert_echo(big, got_big.outputs)
    assert_echo(small, got_small.outputs)
    assert_echo(long_rows, got_long.outputs)


async def test_zero_delay_combines_what_is_queued() -> None:
    echo = Echo()
    items = [item(tag, 1, 4) for tag in range(5)]
    async with batcher(echo, max_queue_delay_ms=0) as b:
        results = await asyncio.gather(*(b.submit(i) for i in items))
        assert [c["input_ids"].shape for c in echo.calls] == [(5, 4)]
        await b.submit(item(9, 2, 3))  # nothing to wait for
    for inputs, result in zip(items, results, strict=True):
        assert_echo(inputs, result.outputs)
    assert echo.calls[-1]["input_ids"].shape == (2, 3)  # it ran alone


async def test_different_keys_are_never_mixed() -> None:
    echo = Echo()
    items = [item(tag, 1, 4) for tag in range(6)]
    keys = ["a", "b", "a", "b", "a", "b"]
    async with batcher(echo) as b:
        results = await asyncio.gather(*(b.submit(i, key=k) for i, k in zip(items, keys, strict=True)))
    tags_per_call = [sorted(int(t) for t in c["input_ids"][:, 0] // 10_000) for c in echo.calls]
    assert sorted(tags_per_call) == [[0, 2, 4], [1, 3, 5]]
    for inputs, result in zip(items, results, strict=True):
        assert_echo(inputs, result.outputs)


class Blocking(Echo):
    """An echo that holds each call until released, to keep requests waiting in the queue."""

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, inputs: Arrays) -> Arrays:
        self.started.set()
        assert self.release.wait(30)
        return super().__call__(inputs)


async def wait_for(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, 30)


async def test_full_queue_is_refused_at_once() -> None:
    backend = Blocking()
    async with batcher(backend, max_queue_size=4, max_queue_delay_ms=0) as b:
        running = asyncio.create_task(b.submit(item(1, 3, 4)))  # taken off the queue and running
        await wait_for(backend.started)
        waiting = asyncio.create_task(b.submit(item(2, 4, 4)))  # fills the queue
        await asyncio.sleep(0)
        with pytest.raises(Overloaded, match="max_queue_size 4"):
            await asyncio.wait_for(b.submit(item(3, 1, 4)), 5)  # refused without waiting for the backend
        assert not running.done() and not waiting.done()
        backend.release.set()
        assert_echo(item(1, 3, 4), (await running).outputs)
        assert_echo(item(2, 4, 4), (await waiting).outputs)
        assert_echo(item(3, 1, 4), (await b.submit(item(3, 1, 4))).outputs)  # room again


async def test_backend_failure_fails_only_that_request() -> None:
    """Issue 11, defect 2: a batch that fails is run again one request at a time, so that only the
    request that broke it fails (its companions used to fail with it)."""
    echo, rows = Echo(), []

    def flaky(inputs: Arrays) -> Arrays:
        rows.append(inputs["input_ids"].shape[0])
        if (inputs["input_ids"] // 10_000 == 666).any():
            raise RuntimeError("boom")
        return echo(inputs)

    async with batcher(flaky) as b:
        bad, companion, good = item(666, 1, 3), item(2, 1, 3), item(1, 1, 3)
        outcomes = await asyncio.gather(
            b.submit(bad, key="x"), b.submit(companion, key="x"), b.submit(good, key="y"), return_exceptions=True
        )
        assert isinstance(outcomes[0], RuntimeError)
        assert 2 in rows  # the bad request and its companion did share a batch
        assert_echo(companion, outcomes[1].outputs)
        assert_echo(good, outcomes[2].outputs)
        # The batcher keeps running.
        assert_echo(item(3, 2, 5), (await b.submit(item(3, 2, 5))).outputs)


async def test_bad_output_shape_fails_the_batch_not_the_batcher() -> None:
    calls = 0

    def wrong_then_right(inputs: Arrays) -> Arrays:
        nonlocal calls
        calls += 1
        return Echo()(inputs) if calls > 1 else {"tokens": np.zeros((1, 1, 2), np.float32)}

    async with batcher(wrong_then_right) as b:
        with pytest.raises(RuntimeError, match="output 'tokens' has shape"):
            await b.submit(item(1, 2, 3))
        assert_echo(item(2, 2, 3), (await b.submit(item(2, 2, 3))).outputs)


async def test_cancelled_callers_are_skipped() -> None:
    backend = Blocking()
    async with batcher(backend, max_queue_delay_ms=0) as b:
        first = asyncio.create_task(b.submit(item(1, 1, 4)))
        await wait_for(backend.started)
        gone = asyncio.create_task(b.submit(item(2, 1, 4)))
        kept = asyncio.create_task(b.submit(item(3, 1, 4)))
        await asyncio.sleep(0)
        gone.cancel()  # e.g. its deadline passed while it waited
        with contextlib.suppress(asyncio.CancelledError):
            await gone
        backend.release.set()
        assert_echo(item(1, 1, 4), (await first).outputs)
        assert_echo(item(3, 1, 4), (await kept).outputs)
    tags = sorted(int(t) for c in backend.calls for t in c["input_ids"][:, 0] // 10_000)
    assert tags == [1, 3]


async def test_timings() -> None:
    async with batcher(Echo(), max_queue_delay_ms=0) as b:
        result = await b.submit(item(1, 1, 3))
    assert result.queue_us >= 0 and result.inference_us >= 0


# --- through every tier -----------------------------------------------------------------------


def assert_close(a: Any, b: Any, where: str) -> None:
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            assert_close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list) and a and isinstance(a[0], dict):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close(x, y, f"{where}[{i}]")
    elif isinstance(a, str) or a is None:
        assert a == b, where
    else:
        assert np.shape(a) == np.shape(b), where
        np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), atol=1e-5, rtol=1e-5, err_msg=where)


@pytest.mark.parametrize(("task", "arch", "params"), [("feature-extraction", "bert", {}), ("text-classification", "roberta", {"top_k": None})])  # fmt: skip
def test_concurrent_gateway_requests_match_sequential(tiny_bundles, task: str, arch: str, params: dict) -> None:
    requests = [
        [{"id": f"{n}-{i}", "text": t} for i, t in enumerate(TEXTS[n % len(TEXTS) :][: 1 + n % 3])] for n in range(12)
    ]
    with Stack(tiny_bundles[(task, arch)].local_dir, model={"max_queue_delay_ms": 20}) as stack:
        with Client(stack.gateway) as client:
            sequential = [client.predict(r, params=params) for r in requests]
            timings = client.last_timings_us
        assert {"preprocess", "model", "postprocess", "gateway", "queue", "inference"} <= set(timings)
        assert timings["queue"] + timings["inference"] <= timings["model"]

        def call(records: list[dict]) -> list[dict]:
            with Client(stack.gateway) as c:
                return c.predict(records, params=params)

        with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
            concurrent_results = list(pool.map(call, requests))
    for n, (seq, conc) in enumerate(zip(sequential, concurrent_results, strict=True)):
        assert [r["id"] for r in conc] == [r["id"] for r in requests[n]]
        assert_close(seq, conc, f"request {n}")


async def test_padding_limit_splits_lengths_apart() -> None:
    echo = Echo()
    items = [item(0, 1, 2), item(1, 1, 2), item(2, 1, 30), item(3, 1, 28)]
    async with batcher(echo, max_queue_delay_ms=50, max_pad_fraction=0.25) as b:
        results = await asyncio.gather(*(b.submit(i) for i in items))
    assert sorted(c["input_ids"].shape for c in echo.calls) == [(2, 2), (2, 30)]  # not (4, 30): 47% padding
    for inputs, result in zip(items, results, strict=True):
        assert result.outputs["tokens"].shape[1] == inputs["input_ids"].shape[1]


async def test_rows_of_a_padded_request_run_at_their_own_length() -> None:
    echo = Echo()
    request = item(7, 3, 10, real=[10, 3, 3])  # preprocess padded every row to 10 tokens
    async with batcher(echo, max_queue_delay_ms=0, max_pad_fraction=0.25) as b:
        result = await b.submit(request)
    assert sorted(tuple(c["input_ids"].shape) for c in echo.calls) == [(1, 10), (2, 3)]
    mask = request["attention_mask"].astype(bool)
    tokens = result.outputs["tokens"]
    assert tokens.shape == (3, 10, 2)
    np.testing.assert_array_equal(tokens[mask], np.stack([request["input_ids"], request["input_ids"] * 2], -1)[mask])
    assert not tokens[~mask].any()  # beyond a row's length: zeros, where the mask says padding
    np.testing.assert_array_equal(result.outputs["summary"][:, 1], [10, 3, 3])


@pytest.mark.parametrize("task", ["token-classification", "feature-extraction"])
def test_in_process_runs_rows_in_length_groups(tiny_bundles, task: str) -> None:
    """The pyfunc path runs a request's rows of different lengths in length groups (the batcher's
    code) instead of padding all to the longest: same outputs as one padded inference, also when
    called from code that already runs an event loop (a notebook, an async server)."""
    from splitserve.core.records import to_records
    from splitserve.inprocess import InProcessPipeline

    local = InProcessPipeline(load_bundle(tiny_bundles[(task, "bert")].local_dir, ("tokenizer", "onnx")))
    texts = ["x", "a much longer text " * 12, "two words", *TEXTS]
    inputs = local.pre.run(to_records(texts), None).model_inputs
    padded = local.run_model.backend.infer(inputs)
    grouped = local.run_model._infer(inputs)
    mask = inputs["attention_mask"].astype(bool)
    for name, expected in padded.items():
        assert grouped[name].shape == expected.shape
        np.testing.assert_allclose(grouped[name][mask], expected[mask], atol=1e-4)

    async def from_a_running_loop() -> Any:
        return local.predict(texts)

    assert asyncio.run(from_a_running_loop()) == local.predict(texts)
