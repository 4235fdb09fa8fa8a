"""Preprocess tier gRPC server: `splitserve.v1.Preprocess`."""

from __future__ import annotations

import grpc

from preprocess_svc.settings import PreprocessSettings
from protos import splitserve_pb2 as pb
from protos import splitserve_pb2_grpc as pb_grpc
from splitserve.core import codec
from splitserve.core.bundle import Bundle
from splitserve.core.errors import InvalidInput
from splitserve.core.limits import check_message, check_request_chars, check_request_tokens, model_output_bytes
from splitserve.core.records import Limits
from splitserve.core.tier import BundleTier, Loaded
from splitserve.core.tokenizer import load_features, load_tokenizer
from splitserve.stages import tokens
from splitserve.stages.preprocess import Preprocessor
from splitserve.stages.template import load_template
from splitserve.tasks.base import Encoded

# Requests of at most this many characters (without a template or audio) are tokenized on the
# event loop: well under a millisecond, less than handing them to a worker thread and back.
SMALL_CHARS = 2048


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
        chars = check_request_chars(request.records, self.settings.max_request_chars)  # before tokenizing them
        with self.using(request.fingerprint, "the gateway's pick", request.model) as version:
            small = (
                chars + sum(len(r.token_ids) for r in request.records) <= SMALL_CHARS  # token ids: checked, padded
                and version.runtime.template is None
                and not any(r.WhichOneof("audio") for r in request.records)
            )
            return await self.offload(context, self._preprocess, request, version, small=small)  # CPU work

    def _preprocess(self, request: pb.PreprocessRequest, version: Loaded) -> pb.PreprocessResponse:
        bundle, preprocessor = version.bundle, version.runtime
        encoded = preprocessor.run(codec.records_from_pb(request.records), codec.params_from_struct(request.params))
        self._check_size(request, encoded, bundle)
        return pb.PreprocessResponse(
            model=version.name,
            fingerprint=bundle.fingerprint,
            model_inputs=codec.arrays_to_tensors(encoded.model_inputs),
            context=codec.arrays_to_tensors(encoded.context),
            model_parameters=codec.model_params_to_pb(encoded.model_params),
            task_records=codec.records_to_pb(encoded.task_records) if encoded.task_records is not None else [],
            truncated=encoded.truncated,
            cache_params=encoded.cache_params,
        )

    async def Tokenize(self, request: pb.TokenizeRequest, context: grpc.aio.ServicerContext) -> pb.TokenizeResponse:
        """The bundle's tokenizer on texts (TEI's /tokenize), within the request limits."""
        s = self.settings
        if len(request.inputs) > s.max_records:
            raise InvalidInput(f"request has {len(request.inputs)} inputs; the limit is {s.max_records}")
        chars = sum(len(t) for t in request.inputs)
        if chars > s.max_request_chars:
            raise InvalidInput(f"request has {chars} characters; the limit is {s.max_request_chars}")
        add = request.add_special_tokens if request.HasField("add_special_tokens") else True
        with self.using(request.fingerprint, "the gateway's pick", request.model) as version:
            tokenizer = version.runtime.tokenizer
            lists = await self.offload(context, tokens.tokenize, tokenizer, list(request.inputs), add)
            return pb.TokenizeResponse(
                model=version.name,
                fingerprint=version.fingerprint,
                inputs=[pb.TokenList(tokens=[pb.Token(**t) for t in one]) for one in lists],
            )

    async def Decode(self, request: pb.DecodeRequest, context: grpc.aio.ServicerContext) -> pb.DecodeResponse:
        """Token ids back to text with the bundle's tokenizer (TEI's /decode)."""
        s = self.settings
        if len(request.ids) > s.max_records:
            raise InvalidInput(f"request has {len(request.ids)} id lists; the limit is {s.max_records}")
        count = sum(len(row.ids) for row in request.ids)
        if count > s.max_request_tokens:
            raise InvalidInput(f"request has {count} token ids; the limit is {s.max_request_tokens}")
        skip = request.skip_special_tokens if request.HasField("skip_special_tokens") else True
        with self.using(request.fingerprint, "the gateway's pick", request.model) as version:
            ids = [list(row.ids) for row in request.ids]
            texts = await self.offload(context, tokens.decode, version.runtime.tokenizer, ids, skip)
            return pb.DecodeResponse(model=version.name, fingerprint=version.fingerprint, texts=texts)

    def _check_size(self, request: pb.PreprocessRequest, encoded: Encoded, bundle: Bundle) -> None:
        """Refuse, before the model runs, a request whose tokens are over budget or whose later
        messages (this response, the model's, the postprocess request) would be over the size limit."""
        s = self.settings
        if "input_ids" in encoded.model_inputs:  # audio rows are bounded by the audio limits instead
            check_request_tokens(encoded.model_inputs, s.max_request_tokens)
        new_tokens = encoded.model_params.get("max_new_tokens") if bundle.config.generation else None
        pooled = "pooling" in encoded.model_params
        outputs = model_output_bytes(
            bundle.config, encoded.model_inputs, int(new_tokens) if new_tokens else None, pooled
        )
        context = sum(a.nbytes for a in encoded.context.values())
        inputs = sum(a.nbytes for a in encoded.model_inputs.values())
        records = sum(r.ByteSize() for r in request.records)
        check_message("the model inputs", inputs + context, s.max_message_bytes)
        check_message("the model outputs with the records", records + context + outputs, s.max_message_bytes)
