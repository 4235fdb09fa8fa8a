"""Preprocess tier gRPC server: `splitserve.v1.Preprocess`."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from preprocess_svc.settings import PreprocessSettings
from preprocess_svc.tokenize import Preprocessor
from protos import splitserve_pb2 as pb
from protos import splitserve_pb2_grpc as pb_grpc
from splitserve import codec
from splitserve.bundle import Bundle, check_model, load_bundle
from splitserve.errors import ModelNotReady
from splitserve.records import Limits
from splitserve.tokenizer import load_tokenizer


class PreprocessTier(pb_grpc.PreprocessServicer):
    name = "preprocess"
    service_names = [pb.DESCRIPTOR.services_by_name["Preprocess"].full_name]

    def __init__(self, settings: PreprocessSettings):
        self.settings = settings
        self.bundle: Bundle | None = None
        self.stage: Preprocessor | None = None
        self.model_name = ""

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_PreprocessServicer_to_server(self, server)

    async def load(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        self.bundle = await loop.run_in_executor(None, load_bundle, self.settings.bundle_uri, ("tokenizer",))
        tokenizer = await loop.run_in_executor(None, load_tokenizer, self.bundle.tokenizer_dir)
        limits = Limits(self.settings.max_records, self.settings.max_text_chars)
        self.model_name = self.settings.model_name or self.bundle.config.name
        self.stage = Preprocessor(self.bundle.config, tokenizer, limits)
        return {"model": self.model_name, "task": self.bundle.config.task, "fingerprint": self.bundle.fingerprint}

    def _ready(self) -> tuple[Bundle, Preprocessor]:
        if self.bundle is None or self.stage is None:
            raise ModelNotReady("preprocess tier is still loading")
        return self.bundle, self.stage

    async def Preprocess(
        self, request: pb.PreprocessRequest, context: grpc.aio.ServicerContext
    ) -> pb.PreprocessResponse:
        bundle, stage = self._ready()
        check_model(request.model, self.model_name)
        records = codec.records_from_pb(request.records)
        params = codec.params_from_struct(request.params)
        encoded = stage.run(records, params)
        return pb.PreprocessResponse(
            model=self.model_name,
            fingerprint=bundle.fingerprint,
            model_inputs=codec.arrays_to_tensors(encoded.model_inputs),
            context=codec.arrays_to_tensors(encoded.context),
            model_parameters=codec.model_params_to_pb(encoded.model_params),
        )

    async def Info(self, request: pb.TierInfoRequest, context: grpc.aio.ServicerContext) -> pb.TierInfo:
        bundle, _ = self._ready()
        return pb.TierInfo(
            tier=self.name, model=self.model_name, task=bundle.config.task, fingerprint=bundle.fingerprint
        )
