"""audio-classification against its oracle, `transformers.pipeline`, on a tiny random-weight
Wav2Vec2 classifier and synthesized audio (tones, a chirp, noise) sent as WAV, FLAC, OGG/Vorbis
and MP3 files and as arrays of samples at other rates: through the gateway (three tiers), in
process, through the inline gateway and the bundle's pyfunc; bad audio is INVALID_ARGUMENT naming
the record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import requests

from splitserve.client import Client
from tests.support.oracle import check_invalid_argument, check_parity, check_pyfunc, close, rest_record
from tests.support.stack import Stack
from tests.support.zoo.audio import audio_file, decoded, synth_audio
from tests.support.zoo.speech import save_tiny_audio_classifier

TASK = "audio-classification"
PARAMS: list[dict[str, Any]] = [{}, {"top_k": None}, {"top_k": 2, "function_to_apply": "sigmoid"}]
ITEMS: list[dict[str, Any]] = [
    {"audio": audio_file(synth_audio(1.0, kind="tone"))},
    {"audio": audio_file(synth_audio(0.7, kind="chirp"), format="FLAC")},
    {"audio": synth_audio(1.3, kind="noise"), "sampling_rate": 16000},
    {"audio": audio_file(synth_audio(0.5, rate=22050, kind="tone"), rate=22050, format="OGG")},
    {"audio": synth_audio(0.8, rate=8000, kind="chirp"), "sampling_rate": 8000},  # resampled
    {"audio": audio_file(np.stack([synth_audio(0.6), synth_audio(0.6, kind="noise")], axis=1))},  # stereo
    {"audio": audio_file(synth_audio(0.9, rate=44100), rate=44100, format="MP3")},
]


class Exported:
    def __init__(self, model_dir: Path, local_dir: str, bundle_uri: str):
        self.task, self.arch, self.model_dir, self.local_dir, self.bundle_uri = (
            TASK,
            "wav2vec2",
            model_dir,
            local_dir,
            bundle_uri,
        )


@pytest.fixture(scope="module")
def bundle(mlflow_store, tmp_path_factory) -> Exported:
    from splitserve.commands.log import log_pipeline
    from splitserve.export import export_bundle

    model_dir = save_tiny_audio_classifier(tmp_path_factory.mktemp("audio-cls"))
    uri = export_bundle(log_pipeline(model_dir, TASK, None), name="tiny-audio-classification", show_progress=False)
    return Exported(model_dir, mlflow.artifacts.download_artifacts(uri), uri)


def expected(pipe: Any, item: Any, params: dict[str, Any]) -> dict[str, Any]:
    return {"labels": pipe(decoded(item), **({"top_k": 5} | params))}


def matches(exp: dict[str, Any], got: dict[str, Any], where: str) -> None:
    e, r = exp["labels"], got["labels"]
    assert [d["label"] for d in r] == [d["label"] for d in e], f"{where}: {r} != {e}"
    assert all(close(a["score"], b["score"]) for a, b in zip(e, r, strict=True)), f"{where}: {r} != {e}"


def test_gateway_and_in_process_match_pipeline(bundle) -> None:
    check_parity(bundle, ITEMS, PARAMS, expected, matches)


def test_inline_gateway_and_pyfunc_match_pipeline(bundle) -> None:
    from tests.support.oracle import pipeline_for

    pipe = pipeline_for(bundle)
    inline = {"inline_stages": bundle.local_dir, "preprocess": [], "postprocess": []}
    records = [{"id": f"i{i}", **item} for i, item in enumerate(ITEMS)]
    with Stack(bundle.local_dir, gateway={**inline, "rest_port": 0}) as stack, Client(stack.gateway) as client:
        got = client.predict(records, params={"top_k": None})
        # The REST door answers what gRPC answers: files as base64, samples as JSON arrays.
        body = {"records": [rest_record(r) for r in records], "params": {"top_k": None}}
        response = requests.post(f"{stack.rest}/v1/predict", json=body, timeout=60)
        assert response.status_code == 200, response.text
        assert response.json()["results"] == got
    for item, result in zip(ITEMS, got, strict=True):
        matches(expected(pipe, item, {"top_k": None}), result, "inline gateway")
    check_pyfunc(bundle, ITEMS, {"top_k": 2}, expected, matches)  # a DataFrame of files and arrays (with their rate)


def test_local_path_and_bare_bytes(bundle, tmp_path) -> None:
    """The client reads a local path on its own side; a bare bytes record is {"audio": ...}; a URL
    is never fetched."""
    path = tmp_path / "tone.wav"
    path.write_bytes(ITEMS[0]["audio"])
    with Stack(bundle.local_dir) as stack, Client(stack.gateway) as client:
        by_path = client.predict([{"id": "p", "audio": str(path)}])
        bare = client.predict([ITEMS[0]["audio"]])
    assert by_path[0]["labels"] == bare[0]["labels"]
    from splitserve.core.errors import InvalidInput

    with pytest.raises(InvalidInput, match="never fetched"):
        Client("127.0.0.1:1").predict([{"id": "u", "audio": "https://example.com/a.wav"}])


def test_bad_audio_is_invalid_argument(bundle) -> None:
    good = {"id": "ok", "audio": ITEMS[0]["audio"]}
    wav = ITEMS[0]["audio"]
    check_invalid_argument(
        bundle,
        good,
        [
            (
                [{"id": "t", "audio": b"this is not audio at all"}],
                None,
                "record 0 (id='t'): field 'audio' is not a readable",
            ),
            ([good, {"id": "cut", "audio": wav[:30]}], None, "record 1 (id='cut'): field 'audio' is not a readable"),
            (
                [{"id": "z", "audio": np.zeros(0, dtype=np.float32), "sampling_rate": 16000}],
                None,
                "(id='z'): field 'audio' has 0 samples",
            ),
            ([{"id": "nr", "audio": synth_audio(0.5)}], None, "(id='nr'): field 'sampling_rate' is missing"),
            ([{"id": "e", "audio": b""}], None, "(id='e'): field 'audio' is empty"),
            ([{"id": "x", "text": "hello"}], None, "(id='x'): field 'audio' is missing"),
            ([good], {"top_k": 0}, "top_k"),
        ],
    )


def test_limits(bundle) -> None:
    """Past the preprocess tier's max seconds per record and max audio bytes per request."""
    import grpc

    long = {"id": "long", "audio": synth_audio(3.0), "sampling_rate": 16000}
    with (
        Stack(bundle.local_dir, pre={"max_audio_seconds": 2.0, "max_audio_bytes": 400_000}) as stack,
        Client(stack.gateway) as client,
    ):
        with pytest.raises(grpc.RpcError) as err:
            client.predict([long])
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "record 0 (id='long'): field 'audio' is 3.0 s long; the limit is 2 s" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            client.predict([{"id": f"a{i}", "audio": synth_audio(1.0), "sampling_rate": 16000} for i in range(8)])
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "bytes of audio; the limit is 400000" in err.value.details()
