"""Audio in records: what callers pass becomes `Record.audio`, it travels through the codec
unchanged, and decoding and resampling refuse bad audio naming the record. No models."""

from __future__ import annotations

import numpy as np
import pytest

from splitserve.core import audio as A
from splitserve.core import codec
from splitserve.core.errors import InvalidInput
from splitserve.core.records import Limits, check_records, to_records
from tests.support.zoo.audio import audio_file, synth_audio


def test_bytes_arrays_and_frames_become_audio_records() -> None:
    import pandas as pd

    wav = audio_file(synth_audio(0.1))
    assert to_records(wav)[0].audio == wav
    assert to_records([wav, {"id": "b", "audio": wav}])[1].id == "b"
    samples = to_records([{"audio": [0.0, 0.5], "sampling_rate": 8000}])[0]
    assert samples.audio.dtype == np.float32 and samples.sampling_rate == 8000
    frame = pd.DataFrame({"id": ["x"], "audio": [wav]})
    assert to_records(frame)[0].audio == wav
    with pytest.raises(InvalidInput, match="never fetched"):
        to_records([{"audio": "https://example.com/a.wav"}], local_files=True)
    with pytest.raises(InvalidInput, match="record 0 \\(id='0'\\): field 'audio' is a string"):
        to_records([{"audio": "a.wav"}])  # a server never reads paths
    with pytest.raises(InvalidInput, match="field 'sampling_rate' must be a positive integer"):
        to_records([{"audio": [0.1], "sampling_rate": -3}])
    with pytest.raises(InvalidInput, match="field 'audio' is not used by this task"):
        check_records(to_records([{"text": "a", "audio": wav}]), Limits(), ("text",), ("text",))


@pytest.mark.parametrize("audio", [audio_file(synth_audio(0.2), format="FLAC"), synth_audio(0.2)])
def test_audio_round_trips_through_the_codec(audio) -> None:
    records = to_records([{"id": "a", "audio": audio, "sampling_rate": None if isinstance(audio, bytes) else 16000}])
    back = codec.records_from_pb(codec.records_to_pb(records))[0]
    if isinstance(audio, bytes):
        assert back.audio == audio and back.sampling_rate is None
    else:
        np.testing.assert_array_equal(back.audio, audio)
        assert back.sampling_rate == 16000


def test_decode_resample_and_refusals() -> None:
    wave = synth_audio(0.5, rate=22050)
    out = A.waveform("record 0", audio_file(wave, rate=22050), None, 16000, 10.0)
    assert abs(out.size - 8000) <= 1
    np.testing.assert_allclose(A.waveform("r", wave, 16000, 16000, 10.0), wave)
    for audio, rate, message in [
        (b"garbage", None, "not a readable audio file"),
        (audio_file(wave)[:40], None, "not a readable audio file"),
        (np.zeros(0, dtype=np.float32), 16000, "0 samples"),
        (wave, None, "'sampling_rate' is missing"),
        (synth_audio(2.0), 16000, "2.0 s long; the limit is 1 s"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            A.waveform("record 3 (id='q')", audio, rate, 16000, 1.0)


def test_bundles_exported_before_audio_keep_their_fingerprint() -> None:
    """The audio fields of serving.json, at their defaults, are not part of the fingerprint."""
    import dataclasses
    import json

    from splitserve.core.bundle import ServingConfig
    from tests.support.configs import config, generation_info

    bundle = config("text-generation", generation=generation_info())
    data = json.loads(bundle.to_json())
    for name in ("input_types", "input_shapes", "exact_lengths", "sampling_rate", "max_audio_seconds", "conv_layers"):
        del data[name]  # a serving.json written before them
    del data["generation"]["decoder_prompt_ids"]
    del data["generation"]["model_settings"]["suppress_tokens"]
    older = ServingConfig.from_json(json.dumps(data))
    assert older.compute_fingerprint() == bundle.compute_fingerprint()
    assert dataclasses.replace(bundle, sampling_rate=16000).compute_fingerprint() != bundle.compute_fingerprint()
