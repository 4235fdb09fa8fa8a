"""Audio for the speech tests: synthesized samples, audio files, and what splitserve decodes a
record's audio to (the oracle's input)."""

from __future__ import annotations


def synth_audio(seconds: float, rate: int = 16000, kind: str = "tone", seed: int = 0):
    """Synthesized mono float32 audio: a tone with harmonics, a chirp, or noise."""
    import numpy as np

    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    if kind == "tone":
        wave = 0.3 * np.sin(2 * np.pi * 330 * t) + 0.1 * np.sin(2 * np.pi * 990 * t)
    elif kind == "chirp":
        wave = 0.4 * np.sin(2 * np.pi * (150 + 300 * t) * t)
    else:
        wave = 0.2 * rng.standard_normal(t.size)
    return (wave + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def audio_file(samples, rate: int = 16000, format: str = "WAV", subtype: str | None = None) -> bytes:
    """The samples as the bytes of an audio file (WAV float32 by default; FLAC, OGG/Vorbis, MP3)."""
    import io

    import soundfile

    buffer = io.BytesIO()
    subtype = subtype or {"WAV": "FLOAT", "FLAC": "PCM_16", "OGG": "VORBIS", "MP3": "MPEG_LAYER_III"}[format]
    soundfile.write(buffer, samples, rate, format=format, subtype=subtype)
    return buffer.getvalue()


def decoded(item: dict, rate: int = 16000):
    """What a record's audio is at the model's rate, as splitserve decodes it (the oracle's input:
    the pipeline itself reads files with ffmpeg, which is not installed, and resamples with
    torchaudio, which torch 2.13 does not have)."""
    import io

    import numpy as np
    import soundfile
    import soxr

    audio = item["audio"]
    if isinstance(audio, bytes):
        samples, source = soundfile.read(io.BytesIO(audio), dtype="float32", always_2d=True)
        samples = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    else:
        samples, source = np.asarray(audio, dtype=np.float32), item["sampling_rate"]
    if source != rate:
        samples = soxr.resample(samples, source, rate, quality="HQ").astype(np.float32)
    return samples
