"""automatic-speech-recognition, two kinds of model, as the pipeline runs them:

- Whisper-style speech encoder-decoders (the bundle has a `generation` section): each record's
  audio, or with `chunk_length_s` (at most the model's 30 s window) its overlapping chunks (one
  row each, `stride_length_s` on both sides) -> Whisper's log-mel features (numpy) -> the decoding
  loop in the model tier (the encoder + decoder graphs, the decoder prompted with the model's
  start, language, task and no-timestamps tokens, the request's `language` and `task` in their
  places, its suppressed tokens never chosen; `return_timestamps` true: no no-timestamps token and
  Whisper's timestamp rules) -> the tokenizer's `_decode_asr` of every record's rows (chunks
  merged on their strides; segment timestamps as `chunks`). Audio past the window without
  `chunk_length_s` is refused (Whisper's own sequential long-form decoding is not implemented),
  and so are word-level timestamps (they need the decoder's cross-attention weights).
- CTC models (Wav2Vec2ForCTC): each record's normalized waveform, or with `chunk_length_s` its
  overlapping chunks (one model row each, `stride_length_s` on both sides) -> logits -> the argmax
  of every frame (the strides cut off) -> the CTC tokenizer's text; `return_timestamps` "char" or
  "word" gives `chunks` with their start and end in seconds.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from protos import splitserve_pb2 as pb
from splitserve.core import generation as G
from splitserve.core import params as P
from splitserve.core.bundle import ServingConfig
from splitserve.core.errors import InvalidInput, record_label
from splitserve.core.records import Record
from splitserve.tasks.audio_classification import normalized, padded_rows, waveforms
from splitserve.tasks.base import ROW_RECORD, Assets, Batch, Encoded, ExportFacts, Task
from splitserve.tasks.whisper import check_one_pass, decoder_prompt, time_precision

FEATURES = "input_features"
GENERATION = tuple(p for p in G.PARAMS if p.name != "stop")  # Whisper: the pipeline's generate_kwargs


def _seconds(name: str, value: Any) -> float | None:
    """Seconds: a number ≥ 0, or null."""
    return None if value is None else _non_negative(name, value)


def _non_negative(name: str, value: Any) -> float:
    checked = P.number(name, value)
    if checked < 0:
        raise InvalidInput(f"param {name!r}: expected a number >= 0, got {value!r}")
    return checked


def _timestamps(name: str, value: Any) -> bool | str | None:
    """true (Whisper: segment timestamps), "char" or "word" (CTC models), or false/null."""
    if value is None or value is False or value == "false":
        return None
    if value is True or value == "true":
        return True
    if value in ("char", "word"):
        return str(value)
    raise InvalidInput(
        f'param {name!r}: expected true (Whisper: segments), "char" or "word" (CTC models) or false, got {value!r}'
    )


def _optional_string(name: str, value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    raise InvalidInput(f"param {name!r}: expected a string, got {value!r}")


def _language(name: str, value: Any) -> str | None:
    """Whisper's decoder language: "fr", "french" or "<|fr|>" (multilingual models), or null."""
    return _optional_string(name, value)


def _speech_task(name: str, value: Any) -> str | None:
    """Whisper's decoder task: "transcribe" or "translate" (multilingual models), or null."""
    return _optional_string(name, value)


CTC_PARAMS = (
    P.Param("chunk_length_s", _seconds, None, "double"),  # null or 0: the whole record at once
    P.Param("stride_length_s", _seconds, None, "double"),  # null: chunk_length_s / 6, on both sides
    P.Param("return_timestamps", _timestamps, None, "string"),
)
# Whisper: the language ("fr", "french" or "<|fr|>") and task ("transcribe", "translate") of its
# decoder prompt; null: the model's generation_config's.
PROMPT_PARAMS = (
    P.Param("language", _language, None, "string"),
    P.Param("task", _speech_task, None, "string"),
)
WHISPER_PARAMS = (*GENERATION, *PROMPT_PARAMS, *CTC_PARAMS)
PARAMS = WHISPER_PARAMS


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
    mlflow_strips = ("text",)
    example = {"text": " Hello world.", "token_ids": [2425, 1002, 13, 50257]}
    decodes_tokens = True
    multi_row = True  # CTC: a record's chunks
    export = ExportFacts(
        ("logits",),
        parity="audio-seq2seq",
        graphs=("encoder_model.onnx", "decoder_model.onnx"),
    )

    def resolve(self, config: ServingConfig, params: dict[str, Any] | None) -> dict[str, Any]:
        params = dict(params or {})
        unknown = sorted(set(params) - {p.name for p in PARAMS})
        if unknown:
            raise InvalidInput(
                f"unknown param(s) {unknown} for task {self.name}; accepted: {sorted(p.name for p in PARAMS)}"
            )
        whisper = config.generation is not None
        mine = WHISPER_PARAMS if whisper else CTC_PARAMS
        # The others' defaults are accepted (MLflow's pyfunc passes every param of the signature).
        unused = sorted(
            p.name for p in PARAMS if p not in mine and p.name in params and params[p.name] not in (None, p.default)
        )
        if unused:
            raise InvalidInput(f"param(s) {unused} are not used by a CTC model")
        own = {k: v for k, v in params.items() if k in {p.name for p in mine}}
        defaults = {k: v for k, v in config.defaults.items() if k in {p.name for p in mine}}
        speech = P.resolve(CTC_PARAMS, _part(own, CTC_PARAMS), _part(defaults, CTC_PARAMS), self.name)
        if speech["stride_length_s"] is not None and not speech["chunk_length_s"]:
            raise InvalidInput("param 'stride_length_s' needs 'chunk_length_s'")
        if not whisper:
            if speech["return_timestamps"] is True:
                raise InvalidInput(
                    'param \'return_timestamps\': a CTC model gives "char" or "word" timestamps, got true'
                )
            return {**{p.name: p.default for p in (*GENERATION, *PROMPT_PARAMS)}, **speech}
        info = _info(config)
        if speech["return_timestamps"] in ("char", "word"):
            raise InvalidInput(
                f"param 'return_timestamps': {speech['return_timestamps']!r} timestamps are not served for "
                "Whisper (word timestamps need the decoder's cross-attention weights); true gives segment timestamps"
            )
        window = config.max_audio_seconds or 30.0
        if speech["chunk_length_s"] and speech["chunk_length_s"] > window:
            raise InvalidInput(
                f"param 'chunk_length_s': {speech['chunk_length_s']:g} s exceeds the model's {window:g} s window"
            )
        resolved = {**G.resolve(info, GENERATION, _part(own, GENERATION), _part(defaults, GENERATION), self.name, None)}
        prompt = P.resolve(PROMPT_PARAMS, _part(own, PROMPT_PARAMS), _part(defaults, PROMPT_PARAMS), self.name)
        resolved.update(speech, **prompt)
        decoder = decoder_prompt(info, resolved)  # checks language and task
        if len(decoder) + resolved["max_new_tokens"] > config.max_length:
            raise InvalidInput(
                f"param 'max_new_tokens': {resolved['max_new_tokens']} new tokens after the {len(decoder)} tokens "
                f"of the decoder's prompt exceed the model's {config.max_length} decoder positions"
            )
        return resolved

    def signature_defaults(self, config: ServingConfig) -> dict[str, Any]:
        if config.generation is None:
            return config.defaults
        resolved = self.resolve(config, {})
        return {name: resolved[name] for name in G.MODEL_DEFAULTS if name in resolved} | config.defaults

    def encode(self, assets: Assets, records: list[Record], p: dict[str, Any]) -> Encoded:
        if assets.config.generation is None:
            return ctc_encode(assets, records, p)
        hint = "pass chunk_length_s to transcribe longer audio in chunks"
        waves = waveforms(assets, records, None if p["chunk_length_s"] else hint)
        rate = int(assets.features.sampling_rate)
        pieces = [(i, piece) for i, wave in enumerate(waves) for piece in _pieces(wave, p, rate, 1)]
        # Every row is a whole window of features, however short its chunk: bounded before computing them.
        window, limit = float(assets.features.chunk_length), 2 * assets.limits.max_audio_seconds
        if len(pieces) * window > limit:
            raise InvalidInput(
                f"params 'chunk_length_s' and 'stride_length_s' cut this request's audio into {len(pieces)} chunks of "
                f"{window:g} s windows; the limit is {limit:g} s of windows (twice the max audio seconds)"
            )
        rows = [log_mel(assets.features, chunk) for _, (chunk, _) in pieces]
        strides = [stride for _, (_, stride) in pieces]
        owners = [i for i, _ in pieces]
        info = _info(assets.config)
        whisper = {"stop": [], "timestamps": bool(p["return_timestamps"]), "decoder_prompt": decoder_prompt(info, p)}
        decoding = G.GenerationParams.of({**p, **whisper}, [], info)
        context = {ROW_RECORD: np.asarray(owners, dtype=np.int64), CHUNK: np.asarray(strides, dtype=np.int64)}
        return Encoded(model_inputs={FEATURES: np.stack(rows)}, context=context, model_params=decoding.to_oip())

    def decode(self, assets: Assets, batch: Batch, p: dict[str, Any]) -> list[dict[str, Any]]:
        """Whisper: the pipeline's decoding (`_decode_asr`) of each record's rows' new tokens
        (special tokens skipped; chunks merged on their strides, in seconds; timestamps as
        `chunks`). CTC: see `ctc_decode`."""
        if assets.config.generation is None:
            return ctc_decode(assets, batch, p)
        generated, strides = batch.output(G.OUTPUT), batch.ctx(CHUNK)
        rate = float(assets.features.sampling_rate) if assets.features is not None else 16000.0
        results = []
        for index, rows in enumerate(batch.record_rows()):
            outputs, ids = [], []
            for r in rows:
                new = generated[r][generated[r] >= 0].tolist()  # -1 pads the rows that stopped early
                check_one_pass(_info(assets.config), new, record_label(index, batch.records[index].id))
                ids += new
                output: dict[str, Any] = {"tokens": np.asarray([new], dtype=np.int64)}
                if p["chunk_length_s"]:
                    output["stride"] = tuple(int(x) / rate for x in strides[r])
                outputs.append(output)
            text, optional = assets.tokenizer._decode_asr(
                outputs,
                return_timestamps=p["return_timestamps"],
                return_language=None,
                time_precision=time_precision(assets),
            )
            value: dict[str, Any] = {"text": text, "token_ids": ids}
            if p["return_timestamps"]:
                value["chunks"] = [
                    {"text": c["text"], "timestamp": tuple(c["timestamp"])} for c in optional.get("chunks", [])
                ]
            results.append({"transcription": value})
        return results

    def as_mlflow_serves(self, value: Any, config: ServingConfig | None = None) -> Any:
        """MLflow strips a transcription's text, but not a CTC model's with timestamps (it answers
        those as the pipeline's JSON; a Whisper's with timestamps as its text, stripped)."""
        whisper = config is not None and config.generation is not None
        return value if value.get("chunks") and not whisper else super().as_mlflow_serves(value)

    def to_pb(self, value: Any) -> pb.Transcription:
        # A Whisper segment the model never closed has no end (None): NaN on the wire.
        chunks = [
            pb.TextChunk(text=c["text"], start=c["timestamp"][0], end=_or_nan(c["timestamp"][1]))
            for c in value.get("chunks", [])
        ]
        return pb.Transcription(text=value["text"], token_ids=[int(t) for t in value["token_ids"]], chunks=chunks)

    def from_pb(self, message: pb.Transcription) -> dict[str, Any]:
        out: dict[str, Any] = {"text": message.text, "token_ids": list(message.token_ids)}
        if message.chunks:
            out["chunks"] = [
                {"text": c.text, "timestamp": (c.start, None if math.isnan(c.end) else c.end)} for c in message.chunks
            ]
        return out


def _part(params: dict[str, Any], spec: tuple[P.Param, ...]) -> dict[str, Any]:
    names = {p.name for p in spec}
    return {k: v for k, v in params.items() if k in names}


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else value


def _pieces(
    wave: np.ndarray, p: dict[str, Any], rate: int, align: int
) -> list[tuple[np.ndarray, tuple[int, int, int]]]:
    """A record's rows: its chunks with `chunk_length_s` (lengths aligned to `align` samples), else
    the whole of it."""
    if not p["chunk_length_s"]:
        return [(wave, (wave.shape[0], 0, 0))]
    stride_s = p["stride_length_s"] if p["stride_length_s"] is not None else p["chunk_length_s"] / 6
    chunk_len = int(round(p["chunk_length_s"] * rate / align) * align)
    side = int(round(stride_s * rate / align) * align)
    if chunk_len <= 2 * side:
        raise InvalidInput("param 'chunk_length_s' must be longer than twice 'stride_length_s'")
    return chunks_of(wave, chunk_len, side, side)


CHUNK = (
    "chunk_stride"  # context: each row's (length, left stride, right stride): CTC in logit frames, Whisper in samples
)
SAMPLES = "row_samples"  # context: each row's samples


def chunks_of(wave: np.ndarray, chunk_len: int, left: int, right: int) -> list[tuple[np.ndarray, tuple[int, int, int]]]:
    """transformers' `chunk_iter`: overlapping chunks and their (samples, left, right) strides."""
    out = []
    step = chunk_len - left - right
    for start in range(0, wave.shape[0], step):
        end = start + chunk_len
        chunk = wave[start:end]
        stride_left = 0 if start == 0 else left
        last = end >= wave.shape[0]
        stride = (chunk.shape[0], stride_left, 0 if last else right)
        if chunk.shape[0] > stride_left:
            out.append((chunk, stride))
        if last:
            break
    return out


def ctc_encode(assets: Assets, records: list[Record], p: dict[str, Any]) -> Encoded:
    """One row per record, or per chunk with `chunk_length_s` (the pipeline's chunk_iter, lengths
    aligned to the model's samples per logit frame); each row normalized on its own."""
    config, rate = assets.config, int(assets.config.sampling_rate or assets.features.sampling_rate)
    align = int(np.prod([s for _, s in config.conv_layers])) or 1
    rows, strides, owners = [], [], []
    for i, wave in enumerate(waveforms(assets, records)):
        for chunk, stride in _pieces(wave, p, rate, align):
            rows.append(normalized(assets, chunk))
            strides.append(stride)
            owners.append(i)
    context = {
        ROW_RECORD: np.asarray(owners, dtype=np.int64),
        CHUNK: np.asarray([_rescale(s, align) for s in strides], dtype=np.int64),
        SAMPLES: np.asarray([r.size for r in rows], dtype=np.int64),
    }
    return Encoded(model_inputs=padded_rows(rows), context=context)


def _rescale(stride: tuple[int, int, int], align: int) -> tuple[int, int, int]:
    """transformers' `rescale_stride`: from samples to logit frames."""
    samples, left, right = stride
    frames = int(round(samples / align))
    return frames, int(round(left / samples * frames)), int(round(right / samples * frames))


def frames_of(config: ServingConfig, samples: int) -> int:
    """The logit frames of a row of `samples` (the feature encoder's convolutions)."""
    for kernel, stride in config.conv_layers:
        samples = (samples - kernel) // stride + 1
    return int(samples)


def ctc_decode(assets: Assets, batch: Batch, p: dict[str, Any]) -> list[dict[str, Any]]:
    """Each record: the argmax of every frame of its rows, the strides cut off, concatenated, as
    the CTC tokenizer decodes them (special tokens kept, as the pipeline keeps them)."""
    logits = batch.output(assets.config.model_outputs[0])
    strides, samples = batch.ctx(CHUNK), batch.ctx(SAMPLES)
    tokenizer, results = assets.tokenizer, []
    for rows in batch.record_rows():
        ids: list[int] = []
        for r in rows:
            tokens = logits[r, : frames_of(assets.config, int(samples[r]))].argmax(axis=-1)
            total, left, right = (int(x) for x in strides[r])
            ids += tokens[left : total - right].tolist()
        value: dict[str, Any] = {"text": tokenizer.decode(ids, skip_special_tokens=False), "token_ids": ids}
        if p["return_timestamps"]:
            offsets = tokenizer.decode(ids, skip_special_tokens=False, output_char_offsets=True)["char_offsets"]
            if p["return_timestamps"] == "word":
                offsets = tokenizer._get_word_offsets(offsets, tokenizer.replace_word_delimiter_char)
            ratio, rate = (
                int(np.prod([s for _, s in assets.config.conv_layers])),
                int(assets.config.sampling_rate or 16000),
            )
            value["chunks"] = [
                {
                    "text": o[p["return_timestamps"]],
                    "timestamp": (o["start_offset"] * ratio / rate, o["end_offset"] * ratio / rate),
                }
                for o in offsets
            ]
        results.append({"transcription": value})
    return results


TASK = AutomaticSpeechRecognition()
