"""audio-classification (Wav2Vec2/HuBERT-style `AutoModelForAudioClassification`): each record's
audio -> the feature extractor's normalized waveform -> logits -> labels with scores, as
transformers' pipeline computes them.

The pipeline runs every record alone and unpadded; the exported graph takes no attention mask, so the
rows travel right-padded with a mask (INT8) that tells the model tier their lengths, and the model
tier runs each at its own length (`ServingConfig.exact_lengths`): padding would change a group-norm
feature encoder's output.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from protos import splitserve_pb2 as pb
from splitserve.core import audio as A
from splitserve.core import params as P
from splitserve.core.errors import InvalidInput, record_label
from splitserve.core.records import Record
from splitserve.tasks.base import Assets, Batch, Encoded, ExportFacts, Task
from splitserve.tasks.text_classification import ranked_labels

INPUT, MASK = "input_values", "attention_mask"


def waveforms(
    assets: Assets, records: list[Record], hint: str | None = "long audio is not chunked for it"
) -> list[np.ndarray]:
    """Every record's audio, decoded and resampled to the feature extractor's rate (mono float32),
    within the limits: the tier's max seconds per record and the model's window (`hint` says what
    to do about longer audio; None: the audio is chunked, the window does not apply)."""
    config = assets.config
    rate = int(config.sampling_rate or assets.features.sampling_rate)
    limit = assets.limits.max_audio_seconds
    out = []
    for i, record in enumerate(records):
        where = record_label(i, record.id)
        seconds = limit
        if hint is not None and config.max_audio_seconds is not None and config.max_audio_seconds < limit:
            seconds = config.max_audio_seconds
        wave = A.waveform(where, record.audio, record.sampling_rate, rate, limit)
        if wave.size > seconds * rate:  # the model's window, after resampling
            raise InvalidInput(
                f"{where}: field 'audio' is {wave.size / rate:.1f} s long; this model takes at most "
                f"{seconds:g} s per record ({hint})"
            )
        out.append(wave)
    return out


def padded_rows(rows: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Rows of different lengths right-padded with 0 into [rows, longest], with their mask (INT8)."""
    width = max(r.size for r in rows)
    values = np.zeros((len(rows), width), dtype=np.float32)
    mask = np.zeros((len(rows), width), dtype=np.int8)
    for i, row in enumerate(rows):
        values[i, : row.size], mask[i, : row.size] = row, 1
    return {INPUT: values, MASK: mask}


def normalized(assets: Assets, wave: np.ndarray) -> np.ndarray:
    """The feature extractor's input_values of one record, alone and unpadded (as the pipeline)."""
    features = assets.features
    out = features(wave, sampling_rate=features.sampling_rate, return_tensors="np")
    return np.asarray(out[INPUT][0], dtype=np.float32)


class AudioClassification(Task):
    name = "audio-classification"
    params = (
        P.Param("top_k", P.optional_positive_int, 5, "long"),  # null: every label
        P.Param("function_to_apply", P.choice("softmax", "sigmoid", "none"), "softmax", "string"),
    )
    required = ("audio",)
    fields = ("audio", "sampling_rate")
    result_kind = "labels"
    example = [{"label": "speech", "score": 0.91}, {"label": "music", "score": 0.09}]
    export = ExportFacts(("logits",), parity="audio", labels=True)

    def encode(self, assets: Assets, records: list[Record], p: dict[str, Any]) -> Encoded:
        rows = [normalized(assets, wave) for wave in waveforms(assets, records)]
        return Encoded(model_inputs=padded_rows(rows), context={})

    def decode(self, assets: Assets, batch: Batch, p: dict[str, Any]) -> list[dict[str, Any]]:
        logits = batch.output(assets.config.model_outputs[0])
        id2label = assets.config.id2label or {}
        top_k = p["top_k"] if p["top_k"] is not None and p["top_k"] < len(id2label) else None
        return [
            {"labels": ranked_labels(logits[i], id2label, p["function_to_apply"], top_k)}
            for i in range(len(batch.records))
        ]

    def to_pb(self, value: Any) -> pb.Labels:
        return pb.Labels(labels=[pb.LabelScore(label=d["label"], score=d["score"]) for d in value])

    def from_pb(self, message: pb.Labels) -> list[dict[str, Any]]:
        return [{"label": x.label, "score": x.score} for x in message.labels]


TASK = AudioClassification()
