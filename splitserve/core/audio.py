"""Audio in records: a file's bytes (wav, flac, ogg/vorbis, mp3: whatever libsndfile reads) or an
array of samples with its rate, decoded to mono float32 and resampled to the model's rate.

numpy, `soundfile` (libsndfile, bundled in its wheels) and `soxr` (resampling), imported when
first needed; never torch. URLs are never fetched: a record carries the audio itself.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from splitserve.core.errors import InvalidInput

# The most seconds of audio one record may hold, and the most audio bytes (files, or 4 bytes a
# sample) one request may carry, unless a tier's settings say otherwise.
MAX_AUDIO_SECONDS = 600.0
MAX_AUDIO_BYTES = 32 * 1024 * 1024
URL_PREFIXES = ("http://", "https://", "ftp://", "s3://", "gs://")


def audio_nbytes(audio: Any) -> int:
    """What a record's audio weighs on the wire."""
    return len(audio) if isinstance(audio, (bytes, bytearray)) else int(np.asarray(audio).size) * 4


def local_audio(where: str, value: Any) -> Any:
    """A caller-side value for the `audio` field, as a record carries it: a local path (str or
    Path) is read here, on the caller's machine; a URL is refused (never fetched)."""
    if isinstance(value, (str, Path)):
        text = str(value)
        if text.lower().startswith(URL_PREFIXES):
            raise InvalidInput(
                f"{where}: field 'audio' is a URL ({text[:60]!r}); URLs are never fetched: send the file's bytes"
            )
        path = Path(text).expanduser()
        if not path.is_file():
            raise InvalidInput(f"{where}: field 'audio': no such local file {text[:200]!r}")
        return path.read_bytes()
    return value


def samples_of(where: str, value: Any) -> bytes | np.ndarray:
    """A record's `audio`: bytes of a file, or a 1-D array of samples (float32)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, (str, Path)):
        text = str(value)
        if text.lower().startswith(URL_PREFIXES):
            raise InvalidInput(
                f"{where}: field 'audio' is a URL ({text[:60]!r}); URLs are never fetched: send the file's bytes"
            )
        raise InvalidInput(
            f"{where}: field 'audio' is a string; send the audio file's bytes or an array of samples "
            "(the Python client and the pyfunc read local paths on the caller's side)"
        )
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise InvalidInput(
            f"{where}: field 'audio' must be the bytes of an audio file or an array of samples, got {type(value).__name__}"
        ) from None
    if array.ndim != 1:
        raise InvalidInput(
            f"{where}: field 'audio' must be a 1-D array of samples (mono), got shape {list(array.shape)}"
        )
    if not np.all(np.isfinite(array)):
        raise InvalidInput(f"{where}: field 'audio' has NaN or infinite samples")
    return array


def decode(where: str, data: bytes) -> tuple[np.ndarray, int]:
    """A file's samples (mono float32: channels averaged) and its rate."""
    import soundfile

    if not data:
        raise InvalidInput(f"{where}: field 'audio' is empty (0 bytes)")
    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
        detail = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise InvalidInput(
            f"{where}: field 'audio' is not a readable audio file (wav, flac, ogg, mp3): {detail}"
        ) from None
    return samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0], int(rate)


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return samples
    import soxr

    return np.asarray(soxr.resample(samples, rate, target, quality="HQ"), dtype=np.float32)


def waveform(where: str, audio: Any, sampling_rate: int | None, target_rate: int, max_seconds: float) -> np.ndarray:
    """A record's audio as mono float32 samples at `target_rate`, checked: decodable, not empty,
    at most `max_seconds` long; an array needs its `sampling_rate`."""
    if isinstance(audio, bytes):
        samples, rate = decode(where, audio)
        if sampling_rate is not None and sampling_rate != rate:
            raise InvalidInput(
                f"{where}: field 'sampling_rate' is {sampling_rate} but the audio file says {rate}; leave it out for files"
            )
    else:
        samples = audio
        if sampling_rate is None:
            raise InvalidInput(
                f"{where}: field 'sampling_rate' is missing: an array of samples needs its rate "
                f"(this model takes {target_rate} Hz; it is resampled)"
            )
        rate = sampling_rate
    if rate <= 0:
        raise InvalidInput(f"{where}: field 'sampling_rate' must be positive, got {rate}")
    if samples.size == 0:
        raise InvalidInput(f"{where}: field 'audio' has 0 samples")
    seconds = samples.size / rate
    if seconds > max_seconds:
        raise InvalidInput(f"{where}: field 'audio' is {seconds:.1f} s long; the limit is {max_seconds:g} s")
    return resample(samples, rate, target_rate)
