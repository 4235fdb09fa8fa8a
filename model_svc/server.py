"""Model tier gRPC server: the Open Inference Protocol's `inference.GRPCInferenceService`.

The model version reported (and accepted in requests) is the serving bundle's fingerprint: a
request pinned to another bundle's fingerprint is refused with FAILED_PRECONDITION.

`ModelInfer` requests are batched dynamically (`model_svc.batching`); each response's `parameters`
say where its time went: `queue_us` (waiting for a batch) and `inference_us` (the batch's run), and
`intra_op_threads`, the threads its batch ran on (`model_svc.threads`: every core for a batch that
runs alone, one per batch beside others).

Generation bundles: the request's `parameters` are the generation params
(`splitserve.core.generation.GenerationParams.from_oip`) and the output is `generated_ids` (INT64 [rows, new tokens],
-1 after a row's end). Generation requests that wait while a batch generates run together in the
next one (`generation_batching.GenerationBatcher`), each row with its own request's params.
`ModelStreamInfer` (Triton's streaming RPC) streams their new tokens as they are chosen. A
generation whose caller has gone away (cancelled, past its deadline) stops at its next token.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np

from model_svc import codec, generation, threads
from model_svc.backends import Backend, check_inputs, create_backend
from model_svc.batching import Batcher
from model_svc.generation_batching import GenerationBatcher
from model_svc.settings import ModelSettings
from protos import grpc_predict_v2_pb2 as oip
from protos import grpc_predict_v2_pb2_grpc as oip_grpc
from splitserve.core import VERSION, pooling, tracing
from splitserve.core.bundle import Bundle, check_model
from splitserve.core.errors import InvalidInput, ModelNotFound, shown
from splitserve.core.generation import OUTPUT, GenerationParams
from splitserve.core.limits import check_message, check_request_tokens, model_output_bytes
from splitserve.core.tier import BundleTier, Loaded


class ModelTier(BundleTier, oip_grpc.GRPCInferenceServiceServicer):
    name = "model"
    service_names = [oip.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name]
    settings: ModelSettings

    def __init__(self, settings: ModelSettings):
        super().__init__(settings)
        self.parts = ("onnx",) if settings.backend == "onnx" else ()  # torch loads the source model
        s = settings
        self.plan = threads.plan(s.backend, s.device, s.intra_op_threads, s.idle_threads, s.parallel_batches)
        # `lanes` inferences at once per replica (every version's), each on its own intra-op threads.
        self.executor = ThreadPoolExecutor(max_workers=self.plan.lanes, thread_name_prefix="infer")

    def register(self, server: grpc.aio.Server) -> None:
        oip_grpc.add_GRPCInferenceServiceServicer_to_server(self, server)

    def rest_app(self) -> Any:
        """The protocol over REST beside the gRPC port (`rest_port`): these handlers (model_svc.rest)."""
        from model_svc.rest import build_app

        return build_app(self)

    def build(self, bundle: Bundle) -> Engine:
        s = self.settings
        # Generation runs one batch at a time (its decoding loop), on the threads as given.
        t = self.plan if bundle.config.generation is None else threads.ThreadPlan(s.intra_op_threads, 0, 1)
        backend = create_backend(
            bundle, s.backend, s.device, t.threads, s.spin_wait, s.dtype, s.int8_check, idle_threads=t.idle_threads
        )
        head = pooling.read_head(bundle.config.head, bundle.onnx_path.parent if s.backend == "onnx" else None)
        return Engine(backend, head)

    async def started(self, version: Loaded) -> dict[str, Any]:
        bundle, engine = version.bundle, version.runtime
        s = self.settings
        engine.batcher = Batcher(
            engine.backend.infer,
            token_outputs=bundle.config.token_outputs,
            max_batch_size=s.max_batch_size,
            max_batch_tokens=s.max_batch_tokens,
            max_queue_delay_ms=s.max_queue_delay_ms,
            max_queue_size=s.max_queue_size,
            max_pad_fraction=0.0 if bundle.config.exact_lengths else s.max_pad_fraction,
            executor=self.executor,
            infer_alone=getattr(engine.backend, "infer_alone", None) if self.plan.idle_threads else None,
            lanes=self.plan.lanes,
        )
        engine.batcher.start()
        if bundle.config.generation is not None:
            run_jobs = functools.partial(generation.run_jobs, engine.backend.stepper)
            engine.generations = GenerationBatcher(run_jobs, self.executor, s.max_batch_size, s.max_queue_size)
            engine.generations.start()
        return {"backend": engine.backend.name}

    async def stopped(self, version: Loaded) -> None:
        await version.runtime.close()

    async def close(self) -> None:
        await asyncio.gather(*(v.runtime.close() for v in self.versions))
        self.executor.shutdown(wait=False)
        await super().close()

    @property
    def loaded(self) -> bool:
        return bool(self.versions)

    def _check_model(self, name: str, version: str) -> Loaded:
        if not name:  # OIP requests always name the model
            check_model(name, self.ready().name, required=True)
        return self.ready(version, "the request", name)

    async def ServerLive(self, request: Any, context: Any) -> oip.ServerLiveResponse:
        return oip.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> oip.ServerReadyResponse:
        return oip.ServerReadyResponse(ready=self.loaded)

    async def ModelReady(self, request: oip.ModelReadyRequest, context: Any) -> oip.ModelReadyResponse:
        held = [v.fingerprint for v in self.versions if v.name == request.name]
        if self.loaded and not held and request.name not in self.sources:
            self._check_model(request.name, "")  # never served here: NOT_FOUND (unloaded ones: not ready)
        return oip.ModelReadyResponse(ready=bool(held) and (not request.version or request.version in held))

    async def ServerMetadata(self, request: Any, context: Any) -> oip.ServerMetadataResponse:
        return oip.ServerMetadataResponse(name="splitserve", version=VERSION, extensions=["model_repository"])

    async def RepositoryIndex(self, request: oip.RepositoryIndexRequest, context: Any) -> oip.RepositoryIndexResponse:
        """Triton's model-repository index: every version held (during a rollout, two of a model),
        then the models unloaded (`RepositoryModelUnload`), UNAVAILABLE."""
        held = [
            oip.RepositoryIndexResponse.ModelIndex(name=v.name, version=v.fingerprint, state="READY")
            for v in self.versions
        ]
        names = {v.name for v in self.versions}
        unloaded = [
            oip.RepositoryIndexResponse.ModelIndex(name=n, state="UNAVAILABLE", reason="unloaded")
            for n in self.sources
            if n not in names
        ]
        return oip.RepositoryIndexResponse(models=held + ([] if request.ready else unloaded))

    async def RepositoryModelLoad(
        self, request: oip.RepositoryModelLoadRequest, context: Any
    ) -> oip.RepositoryModelLoadResponse:
        """Load the bundle at parameter `uri` (default: where `model_name` was loaded from) as the
        current version of `model_name`, beside the versions held."""
        param = request.parameters.get("uri")
        uri = param.string_param if param is not None and param.WhichOneof("parameter_choice") else ""
        if not request.model_name:
            raise InvalidInput("RepositoryModelLoad needs a model_name")
        if not uri and request.model_name not in self.sources:
            raise ModelNotFound(
                f"model {shown(request.model_name)} was never loaded here: give its bundle as parameter 'uri'"
            )
        await self.add(uri or self.sources[request.model_name], request.model_name)
        return oip.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: oip.RepositoryModelUnloadRequest, context: Any
    ) -> oip.RepositoryModelUnloadResponse:
        """Stop serving `model_name` (new requests: NOT_FOUND); its versions are unloaded once the
        requests in flight on them end."""
        await self.unload(request.model_name)
        return oip.RepositoryModelUnloadResponse()

    async def ModelMetadata(self, request: oip.ModelMetadataRequest, context: Any) -> oip.ModelMetadataResponse:
        version = self._check_model(request.name, request.version)
        config = version.bundle.config
        return oip.ModelMetadataResponse(
            name=version.name,
            versions=[v.fingerprint for v in self.versions if v.name == version.name],  # the current one first
            platform=version.runtime.backend.platform,
            inputs=[
                codec.tensor_metadata(n, config.input_types.get(n, "INT64"), config.input_shapes.get(n, [-1, -1]))
                for n in config.model_inputs
            ],
            outputs=[
                codec.tensor_metadata(n, "INT64" if config.generation else "FP32", config.output_shapes[n])
                for n in config.model_outputs
            ],
        )

    def _inputs(self, request: oip.ModelInferRequest, version: Loaded) -> dict[str, Any]:
        """The request's input arrays, once its tensors are checked."""
        bundle = version.bundle
        inputs = codec.inputs_from_request(request)
        check_inputs(inputs, bundle.config, self.settings.max_batch_size)
        if "input_ids" in inputs:  # audio rows are bounded by the preprocess tier's audio limits
            check_request_tokens(inputs, self.settings.max_request_tokens)
        if bundle.config.generation is None:  # the response must fit in a message: checked before the work
            pooled = "pooling" in codec.parameters_from_request(request)
            size = model_output_bytes(bundle.config, inputs, pooled=pooled)
            check_message("the response", size, self.settings.max_message_bytes)
        return inputs

    @contextlib.contextmanager
    def _using(self, request: oip.ModelInferRequest) -> Iterator[Loaded]:
        """The version the request names (its model checked), counted in use meanwhile."""
        self._check_model(request.model_name, request.model_version)
        with self.using(request.model_version, "the request", request.model_name) as version:
            yield version

    async def ModelInfer(self, request: oip.ModelInferRequest, context: Any) -> oip.ModelInferResponse:
        return await self.infer(request, context.time_remaining())

    async def infer(self, request: oip.ModelInferRequest, time_left_s: float | None) -> oip.ModelInferResponse:
        """One inference, whatever door it came by (gRPC ModelInfer, REST `/infer`); `time_left_s`:
        the caller's deadline, None for the tier's own timeout."""
        with self._using(request) as version:
            inputs = self._inputs(request, version)
            if version.bundle.config.generation is not None:
                return await self._generate(request, inputs, version)
            return await self._infer(request, inputs, version, time_left_s)

    async def _infer(
        self, request: oip.ModelInferRequest, inputs: dict[str, Any], version: Loaded, time_left_s: float | None
    ) -> oip.ModelInferResponse:
        bundle, batcher = version.bundle, version.runtime.batcher
        config = bundle.config
        parameters = codec.parameters_from_request(request)
        pooling.from_oip(parameters)  # checked before the work
        # Every request here is for this one bundle, and no params reach the model (pooling applies
        # after it, per request): the fingerprint is the only key that could change the computation.
        result = await batcher.submit(inputs, key=bundle.fingerprint, time_left_s=time_left_s)
        main = config.model_outputs[0]
        outputs = pooling.pooled_outputs(
            result.outputs,
            inputs.get("attention_mask"),
            parameters,
            main,
            config.output_shapes.get(main, []),
            version.runtime.head,
        )
        response = codec.response_from_outputs(outputs, request, version.name, bundle.fingerprint)
        response.parameters["queue_us"].int64_param = result.queue_us
        response.parameters["inference_us"].int64_param = result.inference_us
        # The intra-op threads its batch ran on (0: the runtime's default).
        used = self.plan.idle_threads if result.alone else self.plan.threads
        response.parameters["intra_op_threads"].int64_param = used
        response.parameters["input_tokens"].int64_param = input_tokens(inputs)
        tracing.record_phases([("queue", result.queue_us), ("inference", result.inference_us)])
        return response

    async def _generate(
        self, request: oip.ModelInferRequest, inputs: dict[str, Any], version: Loaded
    ) -> oip.ModelInferResponse:
        responses = [r async for r in self._generation(request, inputs, version, stream=False)]
        return responses[-1]  # not streaming: the final response only

    async def ModelStreamInfer(self, requests: Any, context: Any) -> AsyncIterator[oip.ModelStreamInferResponse]:
        """Triton's decoupled streaming: for a generation bundle, one response per chunk of new
        tokens (`generated_ids` INT64 [1, n] of row `row`), then the final response, as ModelInfer
        answers it, with `triton_final_response` true. Other bundles: the final response only.
        An error ends the stream with its status code."""
        async for request in requests:
            with self._using(request) as version:
                inputs = self._inputs(request, version)
                if version.bundle.config.generation is None:
                    response = await self._infer(request, inputs, version, context.time_remaining())
                    yield oip.ModelStreamInferResponse(infer_response=response)
                    continue
                async for response in self._generation(request, inputs, version, stream=True):
                    yield oip.ModelStreamInferResponse(infer_response=response)

    async def _generation(
        self, request: oip.ModelInferRequest, inputs: dict[str, Any], version: Loaded, stream: bool
    ) -> AsyncIterator[oip.ModelInferResponse]:
        """Run the decoding loop in the inference thread; yield the streamed chunks (`stream`) and
        the final response. When the caller goes away (cancelled, deadline), the loop stops at its
        next token instead of running on for nobody."""
        bundle, generations = version.bundle, version.runtime.generations
        assert generations is not None and bundle.config.generation is not None
        params = GenerationParams.from_oip(codec.parameters_from_request(request), bundle.config.generation)
        prompts = generation.prompts_from(inputs, params, bundle.config)
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[tuple[int, list[int]] | None] = asyncio.Queue()
        abandoned = threading.Event()

        def on_tokens(row: int, tokens: list[int]) -> None:
            if abandoned.is_set():
                raise generation.Abandoned("the caller went away")
            if stream:
                loop.call_soon_threadsafe(chunks.put_nowait, (row, tokens))

        def finished(future: asyncio.Future[Any]) -> None:
            if not future.cancelled():
                future.exception()  # retrieved here; awaiting the future below raises it
            # After every chunk: those were scheduled on the loop before the batch's end was.
            loop.call_soon(chunks.put_nowait, None)

        # Generated together with the requests waiting beside it (generation.run_jobs).
        future = generations.submit(generation.Job(prompts, params, on_tokens))
        future.add_done_callback(finished)
        try:
            while (item := await chunks.get()) is not None:
                rows: dict[int, list[int]] = {item[0]: list(item[1])}
                ended = False
                while not chunks.empty():  # coalesce the chunks that came while the last was sent
                    more = chunks.get_nowait()
                    if more is None:
                        ended = True
                        break
                    rows.setdefault(more[0], []).extend(more[1])
                for row, tokens in rows.items():
                    part = {OUTPUT: np.asarray([tokens], dtype=np.int64)}
                    chunk = codec.response_from_outputs(part, request, version.name, bundle.fingerprint)
                    chunk.parameters["row"].int64_param = row
                    chunk.parameters["triton_final_response"].bool_param = False
                    yield chunk
                if ended:
                    break
            result, queue_us, inference_us = await future
        finally:
            abandoned.set()
            future.cancel()  # still waiting for its batch: it is skipped
        if isinstance(result, generation.Abandoned):
            raise result
        outputs = generation.as_output(result)
        response = codec.response_from_outputs(outputs, request, version.name, bundle.fingerprint)
        response.parameters["queue_us"].int64_param = queue_us
        response.parameters["inference_us"].int64_param = inference_us
        response.parameters["input_tokens"].int64_param = input_tokens(inputs)
        tracing.record_phases([("queue", queue_us), ("inference", inference_us)])
        if stream:
            response.parameters["triton_final_response"].bool_param = True
        yield response


class Engine:
    """One version's model: its backend and the batchers that feed it (made once it is loaded)."""

    def __init__(self, backend: Backend, head: pooling.Head | None = None):
        self.backend, self.head = backend, head  # head: a sentence-transformers bundle's (`pooling.Head`)
        self.batcher: Batcher | None = None
        self.generations: GenerationBatcher | None = None
        self.streams = False  # what `Info` reads of a runtime; the model tier answers ModelMetadata instead

    async def close(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()
        if self.generations is not None:
            await self.generations.close()


def input_tokens(inputs: dict[str, Any]) -> int:
    """The request's tokens, padding left out (its OpenAI `usage`)."""
    mask = inputs.get("attention_mask")
    if mask is not None:
        return int(mask.sum())
    return int(inputs["input_ids"].size) if "input_ids" in inputs else 0
