"""Postprocess tier gRPC server: `splitserve.v1.Postprocess`."""

from __future__ import annotations

import grpc

from postprocess_svc.settings import PostprocessSettings
from protos import splitserve_pb2 as pb
from protos import splitserve_pb2_grpc as pb_grpc
from splitserve import tasks
from splitserve.core import codec
from splitserve.core.bundle import Bundle
from splitserve.core.tier import BundleTier, Loaded
from splitserve.core.tokenizer import load_tokenizer
from splitserve.stages.postprocess import Postprocessor
from splitserve.stages.template import load_template

# Model outputs of at most this size (without a template) are decoded on the event loop: well
# under a millisecond (a few records' pooled vectors, labels or tokens), less than a thread hand-off.
SMALL_OUTPUT_BYTES = 64 * 1024


class PostprocessTier(BundleTier, pb_grpc.PostprocessServicer):
    name = "postprocess"
    service_names = [pb.DESCRIPTOR.services_by_name["Postprocess"].full_name]
    parts = ("tokenizer", "template")
    settings: PostprocessSettings

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_PostprocessServicer_to_server(self, server)

    def build(self, bundle: Bundle) -> Postprocessor:
        # The tokenizer is small to fetch; it is loaded only for tasks that decode tokens (and for a
        # template's load hook).
        needed = tasks.get(bundle.config.task).decodes_tokens or bundle.config.template is not None
        tokenizer = load_tokenizer(bundle.tokenizer_dir) if needed else None
        return Postprocessor(bundle.config, tokenizer, load_template(bundle, tokenizer))

    async def Postprocess(
        self, request: pb.PostprocessRequest, context: grpc.aio.ServicerContext
    ) -> pb.PostprocessResponse:
        with self.using(request.fingerprint, "the preprocess tier's output", request.model) as version:
            small = (
                version.runtime.template is None
                and sum(len(t.raw) for t in request.model_outputs) <= SMALL_OUTPUT_BYTES
            )
            return await self.offload(context, self._postprocess, request, version, small=small)  # CPU work

    def _postprocess(self, request: pb.PostprocessRequest, version: Loaded) -> pb.PostprocessResponse:
        bundle, postprocessor = version.bundle, version.runtime
        records = codec.records_from_pb(request.records)
        task_records = codec.records_from_pb(request.task_records) if request.task_records else records
        params = codec.params_from_struct(request.params)
        outputs, context_tensors = (
            codec.tensors_to_arrays(request.model_outputs),
            codec.tensors_to_arrays(request.context),
        )
        results = postprocessor.run(task_records, params, outputs, context_tensors, partial=request.partial)
        if postprocessor.template is not None and not request.partial:
            rows = postprocessor.rows(records, task_records, results, params)
            return pb.PostprocessResponse(fingerprint=bundle.fingerprint, rows=codec.rows_to_pb(rows))
        return pb.PostprocessResponse(
            fingerprint=bundle.fingerprint,
            results=[
                tasks.result_to_pb(postprocessor.task, r.id, res) for r, res in zip(task_records, results, strict=True)
            ],
        )
