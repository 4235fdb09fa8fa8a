"""The three stages chained in one process, with no servers: what the pyfunc model runs.

Same stage code as the tiers (`Preprocessor`, a model backend, `Postprocessor`); only the
transport differs.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

from splitserve.bundle import Bundle
from splitserve.records import Record, to_records


class InProcessPipeline:
    def __init__(self, bundle: Bundle, backend: str = "onnx", intra_op_threads: int = 0):
        from model_svc.backends import check_inputs, token_outputs
        from postprocess_svc.postprocess import Postprocessor
        from preprocess_svc.tokenize import Preprocessor
        from splitserve.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(bundle.tokenizer_dir)
        self.bundle = bundle
        self.pre = Preprocessor(bundle.config, tokenizer)
        self.post = Postprocessor(bundle.config, tokenizer)
        self._check_inputs = check_inputs
        if backend == "onnx":
            from model_svc.backends.onnx import OnnxBackend

            self.model: Any = OnnxBackend(bundle.onnx_path, bundle.config, intra_op_threads=intra_op_threads)
        else:
            from model_svc.backends.torch import TorchBackend

            self.model = TorchBackend(bundle.config, intra_op_threads=intra_op_threads)
        self.token_outputs = token_outputs(self.model)

    def predict(self, records: Any, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Results as the gateway client returns them: [{"id": ..., <kind>: ...}, ...]."""
        recs: list[Record] = to_records(records)
        encoded = self.pre.run(recs, params)
        rows = next(iter(encoded.model_inputs.values())).shape[0]  # QA windows, zero-shot pairs: several per record
        self._check_inputs(encoded.model_inputs, self.bundle.config, max_batch_size=rows)
        if self.bundle.config.generation is not None:
            from model_svc import generation

            config = self.bundle.config
            gen_params = generation.parse_params(encoded.model_params, config.generation)
            ids, mask = encoded.model_inputs["input_ids"], encoded.model_inputs["attention_mask"]
            outputs = generation.generate(self.model.stepper, ids, mask, gen_params, config.max_positions)
        else:
            outputs = self._infer(encoded.model_inputs)
        results = self.post.run(recs, params, outputs, encoded.context)
        return [{"id": r.id, **_plain(res)} for r, res in zip(recs, results, strict=True)]

    def _infer(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """One inference; rows of different lengths run in length groups, as the model tier's
        batcher runs them (same code), not all padded to the longest."""
        mask = inputs.get("attention_mask")
        if mask is None or mask.shape[0] == 1 or mask.all():
            return self.model.infer(inputs)
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # the usual case: no event loop in this thread
            return asyncio.run(self._grouped(inputs))
        with ThreadPoolExecutor(1) as pool:  # called from async code (a notebook, a server): another thread
            return pool.submit(asyncio.run, self._grouped(inputs)).result()

    async def _grouped(self, inputs: dict[str, Any]) -> dict[str, Any]:
        from model_svc.batching import Batcher

        batcher = Batcher(
            self.model.infer,
            token_outputs=self.token_outputs,
            max_batch_size=10**9,
            max_batch_tokens=4096,
            max_queue_delay_ms=0,
            max_queue_size=10**9,
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


def _plain(result: dict[str, Any]) -> dict[str, Any]:
    if "embedding" in result:
        return {"embedding": result["embedding"].tolist()}
    return result
