"""Dynamic batching for the model tier: requests that arrive close together run as one inference.

`Batcher.submit(inputs)` queues one request's int64 [rows, tokens] arrays and returns the outputs
for exactly its rows, as an unbatched run would. A worker task takes everything queued once the
oldest request has waited `max_queue_delay_ms` (or at once when a full batch is waiting), sorts
it by sequence length, cuts it into groups of at most `max_batch_size` rows and `max_batch_tokens`
(rows x padded length; a request's rows are cut into parts within it, one row at least), right-pads each group to its
longest length and runs it once in the given executor. Token-level outputs are un-padded back to
each request's own length. Up to `lanes` groups run at once; a group that would run alone (the
only one taken, nothing queued or running) runs by `infer_alone`, on every core (`model_svc.threads`).

Padding is 0 in every input. With `attention_mask` 0 the padded positions are masked keys, so the
real positions come out as before (within float noise); right padding leaves every real token's
position id unchanged too (RoBERTa derives them from a cumulative sum that stops before the padding).

Groups never mix requests with different `key`s (callers pass what changes the computation, e.g.
the bundle fingerprint) or different input names. No protobuf here: numpy and asyncio only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

from splitserve.core.admission import Admission
from splitserve.core.errors import ModelNotReady, Overloaded

log = logging.getLogger("splitserve.batching")

Arrays = dict[str, np.ndarray]

_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
BATCH_ROWS = Histogram("splitserve_model_batch_rows", "Rows per model inference (batch size)", buckets=_SIZES)
BATCH_REQUESTS = Histogram("splitserve_model_batch_requests", "Requests combined into one inference", buckets=_SIZES)
# Most of a batch's token positions that may be padding: 0.1 measured faster than 0.25 on the
# bench's docstring sentences (less padding, and batches as large).
DEFAULT_MAX_PAD_FRACTION = 0.1
BATCH_TOKENS = Counter(
    "splitserve_model_batch_tokens", "Token positions the model ran: real ones, and padding", ["kind"]
)
QUEUE_ROWS = Gauge("splitserve_model_queue_rows", "Rows waiting in the model tier's batching queue")
BATCH_PATHS = Counter(
    "splitserve_model_batch_runs",
    "Batched inferences by how they ran: alone (on the idle threads) or beside others (one lane)",
    ["path"],
)


@dataclass
class Result:
    outputs: Arrays  # this request's rows only, token-level outputs at its own length
    queue_us: int  # submitted -> its batch started
    inference_us: int  # the batch's inference (shared by every request in it)
    alone: bool = False  # its batch ran by `infer_alone`: nothing else queued or running


@dataclass(eq=False)
class _Item:
    inputs: Arrays
    key: tuple[str, ...]
    rows: int
    length: int
    future: asyncio.Future[Result]
    submitted: float = field(default_factory=time.perf_counter)


class Worker:
    """A queue and the task that works it off in batches: what the two batchers share. Subclasses
    say how to take the next batches from the queue (`_batches`) and run one (`_run`)."""

    name = "worker"

    def __init__(self, executor: Executor | None):
        self.executor = executor
        self._queue: list[Any] = []
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._work(), name=self.name)

    async def close(self) -> None:
        """Stop the worker; requests still waiting fail with ModelNotReady."""
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._fail(self._take(), ModelNotReady("model tier is shutting down"))

    def _check_open(self) -> None:
        if self._closed or self._worker is None:
            raise ModelNotReady("model tier is not running")

    def _put(self, item: Any) -> None:
        self._queue.append(item)
        self._wakeup.set()

    def _take(self) -> list[Any]:
        items, self._queue = self._queue, []
        return items

    async def _queued(self) -> None:
        """Wait until a request is queued."""
        while not self._queue:
            self._wakeup.clear()
            await self._wakeup.wait()

    async def _work(self) -> None:
        while True:
            await self._queued()
            for batch in await self._batches():
                await self._guarded(self._run(batch), batch)

    async def _guarded(self, run: Awaitable[None], batch: list[Any]) -> None:
        """Await one batch's run; its failure fails its requests, never the worker."""
        try:
            await run
        except asyncio.CancelledError:
            self._fail(batch, ModelNotReady("model tier is shutting down"))
            raise
        except Exception as exc:  # noqa: BLE001 - a broken batch must not stop the worker
            log.exception("%s: batch of %d requests failed", self.name, len(batch))
            self._fail(batch, exc)

    async def _batches(self) -> list[list[Any]]:
        raise NotImplementedError

    async def _run(self, batch: list[Any], alone: bool = False) -> None:
        raise NotImplementedError

    @staticmethod
    def _fail(items: list[Any], exc: BaseException) -> None:
        for item in items:
            if not item.future.done():
                item.future.set_exception(exc)


class Batcher(Worker):
    """`lanes` batches run at once in the executor (give it as many threads), each by `infer`;
    a batch that would run alone (the only one taken, nothing queued or running) runs by
    `infer_alone` instead, when given, holding every lane while it runs."""

    def __init__(
        self,
        infer: Callable[[Arrays], Arrays],
        *,
        token_outputs: Collection[str],
        max_batch_size: int,
        max_batch_tokens: int,
        max_queue_delay_ms: float,
        max_queue_size: int,
        max_pad_fraction: float = DEFAULT_MAX_PAD_FRACTION,
        executor: Executor | None = None,
        infer_alone: Callable[[Arrays], Arrays] | None = None,
        lanes: int = 1,
    ):
        super().__init__(executor)
        self.infer, self.infer_alone = infer, infer_alone
        self.lanes, self._busy_lanes = lanes, 0
        self._lane_freed = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self.token_outputs = frozenset(token_outputs)  # outputs shaped [rows, tokens, ...]
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_pad_fraction = max_pad_fraction
        self.max_queue_delay_s = max_queue_delay_ms / 1000
        self.max_queue_size = max_queue_size
        self._queued_rows = 0
        self.admission = Admission(None, "tokens", "model tier")

    async def submit(self, inputs: Arrays, key: str = "", time_left_s: float | None = None) -> Result:
        """Run one request's inputs (int64 [rows, tokens], all the same shape) in some batch.

        A request whose rows are right-padded to different lengths is split into its rows, each
        cut to its own length, so that they join batches of their own length; token-level
        outputs come back at the request's width, zero beyond each row's length (positions the
        attention mask already marks as padding). Rows of one length are cut into parts of at most
        `max_batch_tokens` (one row at least), whatever the request's size: memory is bounded by
        that budget, not by the request. A request that the queue ahead of it would keep past its
        deadline (`time_left_s`) is refused at once (`Overloaded`), as is one past `max_queue_size`.
        """
        self._check_open()
        rows, width = next(iter(inputs.values())).shape[:2]
        if self._queued_rows + rows > self.max_queue_size:
            raise Overloaded(
                f"model tier queue is full ({self._queued_rows} rows waiting, max_queue_size "
                f"{self.max_queue_size}); retry later",
                load=self._queued_rows > 0,  # else the request alone is past the queue's size
            )
        with self.admission.admit(rows * width, time_left_s):
            parts = self._parts(inputs)
            if len(parts) == 1:
                return await self._submit(parts[0], key)
            return self._join(await asyncio.gather(*(self._submit(p, key) for p in parts)), width)

    def _parts(self, inputs: Arrays) -> list[Arrays]:
        """The request's rows as batcher items: each row at its own length when they are right-padded
        to different lengths, rows of one length in parts of at most `max_batch_tokens`."""
        rows, width = next(iter(inputs.values())).shape[:2]
        mask = inputs.get("attention_mask")
        if mask is not None and rows > 1:
            lengths = mask.sum(axis=1)
            right_padded = np.array_equal(mask, np.arange(width)[None, :] < lengths[:, None])
            if right_padded and lengths.min() < width:
                return [{n: a[r : r + 1, : max(1, int(lengths[r]))] for n, a in inputs.items()} for r in range(rows)]
        step = max(1, self.max_batch_tokens // width)
        if rows <= step:
            return [inputs]
        return [{n: a[start : start + step] for n, a in inputs.items()} for start in range(0, rows, step)]

    def _join(self, parts: list[Result], width: int) -> Result:
        outputs = {}
        for name in parts[0].outputs:
            arrays = [p.outputs[name] for p in parts]
            if name in self.token_outputs:
                arrays = [_pad(a, width - a.shape[1]) for a in arrays]
            elif arrays[0].ndim >= 2 and len({a.shape[1] for a in arrays}) > 1:  # audio frames: zeros after a row's own
                longest = max(a.shape[1] for a in arrays)
                arrays = [_pad(a, longest - a.shape[1]) for a in arrays]
            outputs[name] = np.concatenate(arrays)
        last = max(parts, key=lambda p: p.queue_us + p.inference_us)  # the row the request waited for
        return Result(outputs, last.queue_us, last.inference_us, last.alone)

    async def _submit(self, inputs: Arrays, key: str) -> Result:
        rows, length = next(iter(inputs.values())).shape[:2]
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queued_rows += rows
        QUEUE_ROWS.inc(rows)
        self._put(_Item(inputs, (key, *sorted(inputs)), rows, length, future))
        return await future  # a cancelled caller cancels the future; the worker then skips it

    def _take(self) -> list[_Item]:
        QUEUE_ROWS.dec(self._queued_rows)
        self._queued_rows = 0
        return super()._take()

    async def _work(self) -> None:
        while True:
            await self._queued()
            await self._free_lanes(1)  # requests queue up (and batch together) while every lane is busy
            batches = await self._batches()
            for batch in batches:
                alone = self.infer_alone is not None and len(batches) == 1 and not self._busy_lanes and not self._queue
                held = self.lanes if alone else 1
                await self._free_lanes(held)
                self._busy_lanes += held
                task = asyncio.get_running_loop().create_task(self._guarded(self._run(batch, alone), batch))
                self._running.add(task)
                task.add_done_callback(functools.partial(self._lanes_done, held))

    async def _free_lanes(self, count: int) -> None:
        while self._busy_lanes + count > self.lanes:
            self._lane_freed.clear()
            await self._lane_freed.wait()

    def _lanes_done(self, count: int, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._busy_lanes -= count
        self._lane_freed.set()

    async def close(self) -> None:
        await super().close()
        running = list(self._running)  # their requests fail with ModelNotReady (`_guarded`)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    async def _batches(self) -> list[list[_Item]]:
        # Wait for companions until the oldest request has waited long enough or a batch is full.
        deadline = self._queue[0].submitted + self.max_queue_delay_s
        while self._queued_rows < self.max_batch_size and (left := deadline - time.perf_counter()) > 0:
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), left)
            except TimeoutError:
                break
        return self.groups(self._take())

    def groups(self, items: list[_Item]) -> list[list[_Item]]:
        """Live items sorted by (key, length), cut where a limit or the key would be crossed."""
        live = sorted((i for i in items if not i.future.done()), key=lambda i: (i.key, i.length))
        groups: list[list[_Item]] = []
        rows = tokens = 0
        for item in live:
            # Sorted by length, so this item's length is the group's padded length.
            padded = (rows + item.rows) * item.length
            real = tokens + item.rows * item.length
            if (
                not groups
                or item.key != groups[-1][0].key
                or rows + item.rows > self.max_batch_size
                or padded > self.max_batch_tokens
                or padded - real > self.max_pad_fraction * padded  # CPU time spent on padding
            ):
                groups.append([])
                rows = tokens = 0
            groups[-1].append(item)
            rows += item.rows
            tokens += item.rows * item.length
        return groups

    async def _run(self, group: list[_Item], alone: bool = False) -> None:
        group = [i for i in group if not i.future.done()]  # callers that gave up meanwhile
        if not group:
            return
        length = max(i.length for i in group)
        if len(group) == 1:
            batch = group[0].inputs
        else:
            batch = {
                name: np.concatenate([_pad(i.inputs[name], length - i.length) for i in group])
                for name in group[0].inputs
            }
        rows = sum(i.rows for i in group)
        real = sum(
            int(i.inputs["attention_mask"].sum()) if "attention_mask" in i.inputs else i.rows * i.length for i in group
        )
        BATCH_TOKENS.labels("real").inc(real)
        BATCH_TOKENS.labels("padding").inc(rows * length - real)
        BATCH_ROWS.observe(rows)
        BATCH_REQUESTS.observe(len(group))
        BATCH_PATHS.labels("alone" if alone else "beside").inc()
        start = time.perf_counter()
        infer = self.infer_alone if alone and self.infer_alone is not None else self.infer
        try:
            outputs = await asyncio.get_running_loop().run_in_executor(self.executor, infer, batch)
        except Exception:
            if len(group) == 1:
                raise
            # One request's inputs may be what broke the batch: the others must not fail with it.
            log.warning("%s: a batch of %d requests failed; running them one at a time", self.name, len(group))
            for item in group:
                try:
                    await self._run([item], alone)
                except Exception as exc:  # noqa: BLE001 - that request's own failure
                    self._fail([item], exc)
            return
        end = time.perf_counter()
        for name, out in outputs.items():
            if out.shape[0] != rows or (name in self.token_outputs and (out.ndim < 2 or out.shape[1] != length)):
                raise RuntimeError(f"output {name!r} has shape {list(out.shape)} for inputs of [{rows}, {length}]")
        offset = 0
        for item in group:
            mine = {}
            for name, out in outputs.items():
                part = out[offset : offset + item.rows]
                mine[name] = part[:, : item.length] if name in self.token_outputs else part
            offset += item.rows
            if not item.future.done():
                item.future.set_result(
                    Result(mine, int((start - item.submitted) * 1e6), int((end - start) * 1e6), alone)
                )


def _pad(array: np.ndarray, width: int) -> np.ndarray:
    """`array` ([rows, tokens, ...]) with `width` more tokens of zeros."""
    return np.pad(array, [(0, 0), (0, width)] + [(0, 0)] * (array.ndim - 2))
