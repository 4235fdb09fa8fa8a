"""Postprocess tier gRPC server: `splitserve.v1.Postprocess`."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from postprocess_svc.postprocess import NEEDS_TOKENIZER, Postprocessor
from postprocess_svc.settings import PostprocessSettings
from protos import splitserve_pb2 as pb
from protos import splitserve_pb2_grpc as pb_grpc
from splitserve import codec
from splitserve.bundle import Bundle, check_fingerprint, check_model, load_bundle
from splitserve.errors import ModelNotReady
from splitserve.tokenizer import load_tokenizer


class PostprocessTier(pb_grpc.PostprocessServicer):
    name = "postprocess"
    service_names = [pb.DESCRIPTOR.services_by_name["Postprocess"].full_name]

    def __init__(self, settings: PostprocessSettings):
        self.settings = settings
        self.bundle: Bundle | None = None
        self.stage: Postprocessor | None = None
        self.model_name = ""

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_PostprocessServicer_to_server(self, server)

    def _load(self) -> tuple[Bundle, Postprocessor]:
        # The tokenizer is small to fetch; it is loaded only for tasks that decode tokens.
        bundle = load_bundle(self.settings.bundle_uri, ("tokenizer",))
        tokenizer = load_tokenizer(bundle.tokenizer_dir) if bundle.config.task in NEEDS_TOKENIZER else None
        return bundle, Postprocessor(bundle.config, tokenizer)

    async def load(self) -> dict[str, Any]:
        bundle, stage = await asyncio.get_running_loop().run_in_executor(None, self._load)
        self.model_name = self.settings.model_name or bundle.config.name
        self.bundle, self.stage = bundle, stage
        return {"model": self.model_name, "task": bundle.config.task, "fingerprint": bundle.fingerprint}

    def _ready(self) -> tuple[Bundle, Postprocessor]:
        if self.bundle is None or self.stage is None:
            raise ModelNotReady("postprocess tier is still loading")
        return self.bundle, self.stage

    async def Postprocess(
        self, request: pb.PostprocessRequest, context: grpc.aio.ServicerContext
    ) -> pb.PostprocessResponse:
        bundle, stage = self._ready()
        check_model(request.model, self.model_name)
        check_fingerprint(request.fingerprint, bundle.fingerprint, "the preprocess tier's output")
        records = codec.records_from_pb(request.records)
        results = stage.run(
            records,
            codec.params_from_struct(request.params),
            codec.tensors_to_arrays(request.model_outputs),
            codec.tensors_to_arrays(request.context),
        )
        return pb.PostprocessResponse(
            fingerprint=bundle.fingerprint,
            results=[codec.result_to_pb(r.id, res) for r, res in zip(records, results, strict=True)],
        )

    async def Info(self, request: pb.TierInfoRequest, context: grpc.aio.ServicerContext) -> pb.TierInfo:
        bundle, _ = self._ready()
        return pb.TierInfo(
            tier=self.name, model=self.model_name, task=bundle.config.task, fingerprint=bundle.fingerprint
        )
