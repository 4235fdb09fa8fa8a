"""Preprocess tier gRPC server: `splitserve.v1.Preprocess`."""

from __future__ import annotations

import grpc

from preprocess_svc.settings import PreprocessSettings
from protos import splitserve_pb2 as pb
from protos import splitserve_pb2_grpc as pb_grpc
from splitserve.core import codec
from splitserve.core.bundle import Bundle, check_model
from splitserve.core.records import Limits
from splitserve.core.tier import BundleTier
from splitserve.core.tokenizer import load_features, load_tokenizer
from splitserve.stages.preprocess import Preprocessor
from splitserve.stages.template import load_template


class PreprocessTier(BundleTier, pb_grpc.PreprocessServicer):
    name = "preprocess"
    service_names = [pb.DESCRIPTOR.services_by_name["Preprocess"].full_name]
    parts = ("tokenizer", "template")
    settings: PreprocessSettings

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_PreprocessServicer_to_server(self, server)

    def build(self, bundle: Bundle) -> Preprocessor:
        s = self.settings
        limits = Limits(s.max_records, s.max_text_chars, s.max_audio_seconds, s.max_audio_bytes)
        tokenizer = load_tokenizer(bundle.tokenizer_dir)
        features = load_features(bundle.tokenizer_dir)  # audio tasks' feature extractor
        return Preprocessor(bundle.config, tokenizer, limits, load_template(bundle, tokenizer), features)

    async def Preprocess(
        self, request: pb.PreprocessRequest, context: grpc.aio.ServicerContext
    ) -> pb.PreprocessResponse:
        bundle, stage = self.ready()
        check_model(request.model, self.model_name)
        encoded = stage.run(codec.records_from_pb(request.records), codec.params_from_struct(request.params))
        return pb.PreprocessResponse(
            model=self.model_name,
            fingerprint=bundle.fingerprint,
            model_inputs=codec.arrays_to_tensors(encoded.model_inputs),
            context=codec.arrays_to_tensors(encoded.context),
            model_parameters=codec.model_params_to_pb(encoded.model_params),
            task_records=codec.records_to_pb(encoded.task_records) if encoded.task_records is not None else [],
            truncated=encoded.truncated,
        )
