"""automatic-speech-recognition with a Whisper-style speech encoder-decoder: each record's audio ->
Whisper's log-mel features (numpy) -> the decoding loop in the model tier (Optimum's encoder +
merged decoder, the decoder prompted with the model's start, language, task and no-timestamps
tokens, its suppressed tokens never chosen) -> text, as the pipeline decodes it.

One window per record (the feature extractor's `chunk_length`, 30 s for Whisper): longer audio is
refused (`chunk_length_s` chunking and long-form transcription are not implemented).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from protos import splitserve_pb2 as pb
from splitserve.core import generation as G
from splitserve.core.bundle import ServingConfig
from splitserve.core.errors import InvalidInput
from splitserve.core.records import Record
from splitserve.tasks.audio_classification import waveforms
from splitserve.tasks.base import Batch, Encoded, ExportFacts, Stage, Task

FEATURES = "input_features"
PARAMS = tuple(p for p in G.PARAMS if p.name != "stop")  # the pipeline's generate_kwargs


def _info(config: ServingConfig) -> G.GenerationInfo:
    if config.generation is None:
        raise RuntimeError(f"bundle {config.name!r} of task {config.task} has no generation section")
    return config.generation


def log_mel(features: Any, wave: np.ndarray) -> np.ndarray:
    """Whisper's input_features of one record, [mel bins, frames]: the waveform zero-padded to the
    window, then the feature extractor's numpy log-mel (the pipeline's, which runs torch's STFT
    where torch is installed: equal within 1e-5)."""
    padded = np.zeros(features.n_samples, dtype=np.float32)
    padded[: wave.size] = wave[: features.n_samples]
    return np.asarray(features._np_extract_fbank_features(padded[None], "cpu")[0], dtype=np.float32)


class AutomaticSpeechRecognition(Task):
    name = "automatic-speech-recognition"
    params = PARAMS
    required = ("audio",)
    fields = ("audio", "sampling_rate")
    result_kind = "transcription"
    example = {"text": " Hello world.", "token_ids": [2425, 1002, 13, 50257]}
    decodes_tokens = True
    export = ExportFacts(
        "automatic-speech-recognition-with-past",
        ("logits",),
        parity="audio-seq2seq",
        graphs=("encoder_model.onnx", "decoder_model_merged.onnx"),
    )

    def resolve(self, config: ServingConfig, params: dict[str, Any] | None) -> dict[str, Any]:
        resolved = G.resolve(_info(config), self.params, params, config.defaults, self.name, None)
        prompt = len(_info(config).decoder_prompt_ids)
        if prompt + resolved["max_new_tokens"] > config.max_length:
            raise InvalidInput(
                f"param 'max_new_tokens': {resolved['max_new_tokens']} new tokens after the {prompt} tokens of the "
                f"decoder's prompt exceed the model's {config.max_length} decoder positions"
            )
        return resolved

    def signature_defaults(self, config: ServingConfig) -> dict[str, Any]:
        resolved = self.resolve(config, {})
        return {name: resolved[name] for name in G.MODEL_DEFAULTS if name in resolved} | config.defaults

    def encode(self, stage: Stage, records: list[Record], p: dict[str, Any]) -> Encoded:
        rows = [log_mel(stage.features, wave) for wave in waveforms(stage, records)]
        decoding = G.GenerationParams.of({**p, "stop": []}, [], _info(stage.config))
        return Encoded(model_inputs={FEATURES: np.stack(rows)}, context={}, model_params=decoding.to_oip())

    def decode(self, stage: Stage, batch: Batch, p: dict[str, Any]) -> list[dict[str, Any]]:
        """The pipeline's Whisper decoding (`_decode_asr`) of each row's new tokens: special
        tokens skipped."""
        results = []
        for row in batch.output(G.OUTPUT):
            new = row[row >= 0].tolist()  # -1 pads the rows that stopped early
            text, _ = stage.tokenizer._decode_asr(
                [{"tokens": np.asarray([new], dtype=np.int64)}],
                return_timestamps=None,
                return_language=None,
                time_precision=0.02,  # Whisper's 30 s / 1500 encoder positions; read for timestamps only
            )
            results.append({"transcription": {"text": text, "token_ids": new}})
        return results

    def to_pb(self, value: Any) -> pb.Transcription:
        return pb.Transcription(text=value["text"], token_ids=[int(t) for t in value["token_ids"]])

    def from_pb(self, message: pb.Transcription) -> dict[str, Any]:
        return {"text": message.text, "token_ids": list(message.token_ids)}


TASK = AutomaticSpeechRecognition()
