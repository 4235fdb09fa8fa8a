"""The CPU tiers with an audio bundle as their own processes: the preprocess tier decodes,
resamples and computes Whisper's log-mel features without torch or onnxruntime in the process,
and stays small (its RSS is printed: `pytest -s tests/test_audio_tiers.py`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import grpc
import mlflow
import psutil
import pytest
from zoo import audio_file, save_tiny_whisper, synth_audio

from protos import splitserve_pb2 as pb
from protos import splitserve_pb2_grpc as pb_grpc
from splitserve.core import codec
from splitserve.core.records import to_records

RSS_LIMIT_MB = 200


@pytest.fixture(scope="module")
def whisper_bundle(mlflow_store, tmp_path_factory) -> str:
    from splitserve.commands.log import log_pipeline
    from splitserve.export import export_bundle

    model_dir = save_tiny_whisper(tmp_path_factory.mktemp("whisper-tiers"))
    uri = export_bundle(
        log_pipeline(model_dir, "automatic-speech-recognition", None), name="tiny-whisper-tiers", show_progress=False
    )
    return mlflow.artifacts.download_artifacts(uri)


@pytest.mark.parametrize("tier", ["preprocess", "postprocess"])
def test_cpu_tier_imports_no_torch_and_stays_small(whisper_bundle, tier: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "splitserve", f"serve-{tier}", whisper_bundle, "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        line = proc.stdout.readline()
        assert line, f"serve-{tier} exited before it was ready"
        address = json.loads(line)["address"]
        if tier == "preprocess":
            records = to_records(
                [
                    {"id": "f", "audio": audio_file(synth_audio(20.0, rate=44100), rate=44100, format="FLAC")},
                    {"id": "s", "audio": synth_audio(5.0, rate=8000), "sampling_rate": 8000},
                ]
            )
            with grpc.insecure_channel(address) as channel:
                response = pb_grpc.PreprocessStub(channel).Preprocess(
                    pb.PreprocessRequest(records=codec.records_to_pb(records)), timeout=60
                )
            (features,) = response.model_inputs
            assert features.name == "input_features" and list(features.shape) == [2, 80, 3000]
        process = psutil.Process(proc.pid)
        libraries = "\n".join(m.path for m in process.memory_maps(grouped=True))
        assert "torch" not in libraries and "onnxruntime" not in libraries, f"the {tier} tier loaded torch/onnxruntime"
        rss_mb = process.memory_info().rss / 2**20
        print(f"\n{tier} tier with a Whisper bundle: RSS {rss_mb:.0f} MB after a request")
        assert rss_mb < RSS_LIMIT_MB, f"{tier} RSS {rss_mb:.0f} MB"
    finally:
        proc.terminate()
        proc.wait(30)
