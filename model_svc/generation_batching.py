"""Generation requests batched: those that arrive while a batch generates run together in the
next one (`GenerationBatcher`), on the same worker as `batching.Batcher`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from model_svc.batching import BATCH_REQUESTS, BATCH_ROWS, Worker
from splitserve.core.errors import Overloaded


@dataclass(eq=False)
class _Job:
    job: Any  # a generation.Job
    future: asyncio.Future[tuple[Any, int, int]]
    submitted: float = field(default_factory=time.perf_counter)


class GenerationBatcher(Worker):
    """Generation requests that arrive while a batch is generating wait, then run together in the
    next one: their prompts as one batch, each row with its own request's params
    (`generation.run_jobs`). Up to `max_rows` rows (beams count) per batch; past `max_queue_size`
    waiting rows, `RESOURCE_EXHAUSTED` at once. A job whose caller went away before its batch
    started is skipped; one that goes away during it leaves the batch at its next token."""

    name = "generation-batcher"

    def __init__(
        self, run_jobs: Callable[[list[Any]], list[Any]], executor: Executor, max_rows: int, max_queue_size: int
    ):
        super().__init__(executor)
        self.run_jobs = run_jobs
        self.max_rows, self.max_queue_size = max_rows, max_queue_size

    def submit(self, job: Any) -> asyncio.Future[tuple[Any, int, int]]:
        """A future of (the job's result, queue_us, inference_us)."""
        self._check_open()
        waiting = sum(item.job.rows for item in self._queue)
        if waiting + job.rows > self.max_queue_size:
            raise Overloaded(
                f"model tier generation queue is full ({waiting} rows waiting, max_queue_size "
                f"{self.max_queue_size}); retry later",
                load=waiting > 0,  # else the job alone is past the queue's size
            )
        future: asyncio.Future[tuple[Any, int, int]] = asyncio.get_running_loop().create_future()
        self._put(_Job(job, future))
        return future

    async def _batches(self) -> list[list[_Job]]:
        batch: list[_Job] = []
        rows = 0
        while self._queue and (not batch or rows + self._queue[0].job.rows <= self.max_rows):
            item = self._queue.pop(0)
            if not item.future.done():  # its caller went away while it waited
                batch.append(item)
                rows += item.job.rows
        return [batch] if batch else []

    async def _run(self, batch: list[_Job], alone: bool = False) -> None:
        BATCH_ROWS.observe(sum(item.job.rows for item in batch))
        BATCH_REQUESTS.observe(len(batch))
        start = time.perf_counter()
        loop = asyncio.get_running_loop()
        results = await loop.run_in_executor(self.executor, self.run_jobs, [item.job for item in batch])
        end = time.perf_counter()
        for item, result in zip(batch, results, strict=True):
            if not item.future.done():
                item.future.set_result((result, int((start - item.submitted) * 1e6), int((end - start) * 1e6)))
