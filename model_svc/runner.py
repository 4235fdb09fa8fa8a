"""The model tier's computation without a server, for the in-process pipeline: the same input
checks, the same length groups (the batcher's code) and the same decoding loop."""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from model_svc import generation
from model_svc.backends import Backend, check_inputs
from model_svc.batching import Batcher
from splitserve.core import pooling
from splitserve.core.bundle import ServingConfig
from splitserve.core.generation import GenerationParams

Arrays = dict[str, np.ndarray]


class ModelRunner:
    """`runner(model inputs, model parameters) -> model outputs`, as the model tier answers them."""

    def __init__(
        self, backend: Backend, config: ServingConfig, max_batch_tokens: int = 4096, head: pooling.Head | None = None
    ):
        self.backend, self.config, self.max_batch_tokens = backend, config, max_batch_tokens
        self.head = head  # a sentence-transformers bundle's (`pooling.Head`)

    def __call__(self, inputs: Arrays, params: dict[str, Any]) -> Arrays:
        rows = next(iter(inputs.values())).shape[0]  # QA windows, zero-shot pairs: several per record
        check_inputs(inputs, self.config, max_batch_size=rows)
        info = self.config.generation
        if info is not None:
            p = GenerationParams.from_oip(params, info)
            prompts = generation.prompts_from(inputs, p, self.config)
            (result,) = generation.run_jobs(self.backend.stepper, [generation.Job(prompts, p)])
            assert not isinstance(result, generation.Abandoned)
            return generation.as_output(result)
        pooling.from_oip(params)
        main = self.config.model_outputs[0]
        shape = self.config.output_shapes.get(main, [])
        mask = inputs.get("attention_mask")
        return pooling.pooled_outputs(self._infer(inputs), mask, params, main, shape, self.head)

    def _infer(self, inputs: Arrays) -> Arrays:
        """One inference; rows of different lengths run in length groups, as the model tier's
        batcher runs them (same code), not all padded to the longest."""
        mask = inputs.get("attention_mask")
        if mask is None or mask.shape[0] == 1 or mask.all():
            return self.backend.infer(inputs)
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # the usual case: no event loop in this thread
            return asyncio.run(self._grouped(inputs))
        with ThreadPoolExecutor(1) as pool:  # called from async code (a notebook, a server): another thread
            return pool.submit(asyncio.run, self._grouped(inputs)).result()

    async def _grouped(self, inputs: Arrays) -> Arrays:
        batcher = Batcher(
            self.backend.infer,
            token_outputs=self.config.token_outputs,
            max_batch_size=10**9,
            max_batch_tokens=self.max_batch_tokens,
            max_queue_delay_ms=0,
            max_queue_size=10**9,
            max_pad_fraction=0.0 if self.config.exact_lengths else 0.25,
            executor=_INLINE,
        )
        batcher.start()
        try:
            return (await batcher.submit(inputs)).outputs
        finally:
            await batcher.close()


class _Inline(Executor):
    """Runs each submitted call at once, in the caller's thread (the batcher's executor here)."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting caller
            future.set_exception(exc)
        return future


_INLINE = _Inline()
