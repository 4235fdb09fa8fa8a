"""automatic-speech-recognition on a tiny random-weight Whisper (multilingual generation_config:
English transcription, no timestamps, suppressed tokens) against its oracle, the pipeline on
PyTorch: the same token ids (Whisper's own `generate`) and text, greedy and beam search, through
the gateway (three tiers), in process, on the torch backend, the inline gateway and the pyfunc;
longer audio than the model's 30 s window in chunks, with segment timestamps and the language/task
params, against the pipeline's own steps (its token ids too) and MLflow's pyfunc; longer audio
without chunks and bad audio are INVALID_ARGUMENT."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import mlflow
import numpy as np
import pytest
import requests
import transformers

from splitserve import tasks
from splitserve.client import Client
from splitserve.core.bundle import load_bundle
from splitserve.inprocess import InProcessPipeline
from tests.support.oracle import rest_record
from tests.support.stack import Stack
from tests.support.zoo.audio import audio_file, decoded, synth_audio

TASK = "automatic-speech-recognition"
ITEMS: list[dict[str, Any]] = [
    {"audio": audio_file(synth_audio(1.5, kind="tone"))},
    {"audio": audio_file(synth_audio(2.0, kind="chirp"), format="FLAC")},
    {"audio": audio_file(synth_audio(3.0, rate=22050, kind="chirp", seed=3), rate=22050, format="OGG")},
]
PARAMS: list[dict[str, Any]] = [
    {"max_new_tokens": 12},
    {"max_new_tokens": 8, "num_beams": 3},
    {"max_new_tokens": 10, "repetition_penalty": 1.3, "no_repeat_ngram_size": 2, "min_new_tokens": 4},
]


@pytest.fixture(scope="module")
def bundle(tiny_whisper) -> tuple[Path, str]:
    return tiny_whisper.model_dir, tiny_whisper.local_dir


def expected(pipe: Any, item: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The pipeline's text; its token ids from the same `generate` call the pipeline makes."""
    samples = decoded(item)
    kwargs = {"do_sample": False, **params}
    text = pipe(samples, generate_kwargs=kwargs)["text"]
    features = pipe.feature_extractor(samples, sampling_rate=16000, return_tensors="pt").input_features
    ids = pipe.model.generate(features, **pipe._prepare_generate_kwargs(kwargs))[0].tolist()
    return {"text": text, "token_ids": ids}


def test_matches_pipeline(bundle) -> None:
    model_dir, local_dir = bundle
    pipe = transformers.pipeline(TASK, model=str(model_dir))
    records = [{"id": f"a{i}", **item} for i, item in enumerate(ITEMS)]
    here = InProcessPipeline(load_bundle(local_dir, ("tokenizer", "onnx")))
    on_torch = InProcessPipeline(load_bundle(local_dir, ("tokenizer", "onnx")), backend="torch")
    inline = {"inline_stages": local_dir, "preprocess": [], "postprocess": []}
    with Stack(local_dir, gateway={"rest_port": 0}) as stack, Client(stack.gateway) as client:
        with Stack(local_dir, gateway=inline) as inline_stack, Client(inline_stack.gateway) as inline_client:
            for params in PARAMS:
                answers = {
                    "gateway": client.predict(records, params=params),
                    "inline gateway": inline_client.predict(records, params=params),
                    "in-process": here.predict(records, params=params),
                }
                if params is PARAMS[0]:  # the torch backend: the same loop on PyTorch (greedy; slow)
                    answers["in-process torch"] = on_torch.predict(records, params=params)
                    # The REST door: files as base64, samples as JSON arrays (what gRPC answers).
                    body = {"records": [rest_record(r) for r in records], "params": params}
                    response = requests.post(f"{stack.rest}/v1/predict", json=body, timeout=120)
                    assert response.status_code == 200, response.text
                    assert response.json()["results"] == answers["gateway"]
                for i, item in enumerate(ITEMS):
                    exp = expected(pipe, item, params)
                    assert exp["token_ids"], "the oracle generated nothing: a useless check"
                    for path, results in answers.items():
                        assert results[i]["id"] == f"a{i}"
                        assert results[i]["transcription"] == exp, f"{path} {params} item {i}"


def test_pyfunc_and_errors(bundle) -> None:
    import mlflow.pyfunc
    import pandas as pd

    model_dir, local_dir = bundle
    pipe = transformers.pipeline(TASK, model=str(model_dir))
    frame = pd.DataFrame({"id": ["x", "y"], "audio": [ITEMS[0]["audio"], ITEMS[1]["audio"]]})
    scored = mlflow.pyfunc.load_model(local_dir).predict(frame, params={"max_new_tokens": 6})
    assert list(scored["id"]) == ["x", "y"]
    strip = tasks.get(TASK).as_mlflow_serves  # the pyfunc strips text as MLflow's does
    for item, got in zip(ITEMS[:2], scored["transcription"], strict=True):
        assert got == strip(expected(pipe, item, {"max_new_tokens": 6}))
    with Stack(local_dir) as stack, Client(stack.gateway) as client:
        for records, params, message in [
            (
                [{"id": "long", "audio": synth_audio(31.0), "sampling_rate": 16000}],
                None,
                "record 0 (id='long'): field 'audio' is 31.0 s long; this model takes at most 30 s",
            ),
            (
                [{"id": "bad", "audio": b"RIFF....WAVEfmt nonsense"}],
                None,
                "record 0 (id='bad'): field 'audio' is not a readable",
            ),
            ([{"id": "nr", "audio": synth_audio(0.2).tolist()}], None, "field 'sampling_rate' is missing"),
            ([ITEMS[0]], {"max_new_tokens": 500}, "max_new_tokens"),
            ([ITEMS[0]], {"stop": ["x"]}, "unknown param"),
        ]:
            with pytest.raises(grpc.RpcError) as err:
                client.predict(records, params=params)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
            assert message in err.value.details()
        assert client.predict([ITEMS[0]], params={"max_new_tokens": 6})[0]["transcription"]["token_ids"]
    assert np.isfinite(synth_audio(0.1)).all()


CTC_ITEMS: list[dict[str, Any]] = [
    {"audio": audio_file(synth_audio(2.0, kind="chirp"))},
    {"audio": synth_audio(3.1, rate=8000, kind="tone"), "sampling_rate": 8000},
    {"audio": audio_file(synth_audio(1.2, kind="noise"), format="FLAC")},
]
CTC_PARAMS: list[dict[str, Any]] = [
    {},
    {"return_timestamps": "char"},
    {"chunk_length_s": 1.0},
    {"chunk_length_s": 1.0, "stride_length_s": 0.2, "return_timestamps": "word"},
]


@pytest.fixture(scope="module")
def ctc_bundle(mlflow_store, tmp_path_factory) -> tuple[Path, str]:
    from splitserve.commands.log import log_pipeline
    from splitserve.export import export_bundle
    from tests.support.zoo.speech import save_tiny_ctc

    model_dir = save_tiny_ctc(tmp_path_factory.mktemp("ctc"))
    uri = export_bundle(log_pipeline(model_dir, TASK, None), name="tiny-ctc", show_progress=False)
    return model_dir, mlflow.artifacts.download_artifacts(uri)


def ctc_expected(pipe: Any, item: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The pipeline's text and chunks; without chunking, its frames' argmax as the token ids."""
    import torch

    samples = decoded(item)
    exp = dict(pipe(samples, **params))
    if not params.get("chunk_length_s"):
        values = pipe.feature_extractor(samples, sampling_rate=16000, return_tensors="pt").input_values
        with torch.inference_mode():
            exp["token_ids"] = pipe.model(input_values=values).logits.argmax(-1)[0].tolist()
    return exp


def ctc_matches(exp: dict[str, Any], got: dict[str, Any], where: str) -> None:
    assert got["text"] == exp["text"], where
    if "chunks" in exp:
        assert [c["text"] for c in got["chunks"]] == [c["text"] for c in exp["chunks"]], where
        for g, e in zip(got["chunks"], exp["chunks"], strict=True):
            assert np.allclose(g["timestamp"], [float(x) for x in e["timestamp"]]), where
    else:
        assert "chunks" not in got, where
    if "token_ids" in exp:
        assert got["token_ids"] == exp["token_ids"], where


def test_ctc_matches_pipeline(ctc_bundle) -> None:
    """A tiny Wav2Vec2ForCTC: text (CTC grouping, the word delimiter), char and word timestamps, and
    `chunk_length_s`/`stride_length_s` chunking, as the pipeline; through the gateway, the inline
    gateway, in process and the pyfunc."""
    import mlflow.pyfunc
    import pandas as pd

    model_dir, local_dir = ctc_bundle
    pipe = transformers.pipeline(TASK, model=str(model_dir))
    records = [{"id": f"c{i}", **item} for i, item in enumerate(CTC_ITEMS)]
    here = InProcessPipeline(load_bundle(local_dir, ("tokenizer", "onnx")))
    inline = {"inline_stages": local_dir, "preprocess": [], "postprocess": []}
    with Stack(local_dir) as stack, Client(stack.gateway) as client:
        with Stack(local_dir, gateway=inline) as inline_stack, Client(inline_stack.gateway) as inline_client:
            for params in CTC_PARAMS:
                answers = {
                    "gateway": client.predict(records, params=params),
                    "inline gateway": inline_client.predict(records, params=params),
                    "in-process": here.predict(records, params=params),
                }
                expected = [ctc_expected(pipe, item, params) for item in CTC_ITEMS]
                for path, results in answers.items():
                    for i, (exp, result) in enumerate(zip(expected, results, strict=True)):
                        assert result["id"] == f"c{i}"
                        ctc_matches(exp, result["transcription"], f"{path} {params} item {i}")
        for params, message in [
            ({"num_beams": 2}, "not used by a CTC model"),
            ({"chunk_length_s": 0.2, "stride_length_s": 0.1}, "longer than twice"),
            ({"return_timestamps": True}, "return_timestamps"),
        ]:
            with pytest.raises(grpc.RpcError) as err:
                client.predict(records[:1], params=params)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in err.value.details()
    frame = pd.DataFrame({"id": ["p"], "audio": [CTC_ITEMS[0]["audio"]]})
    scored = mlflow.pyfunc.load_model(local_dir).predict(frame, params={"chunk_length_s": 1.0})
    want = tasks.get(TASK).as_mlflow_serves(ctc_expected(pipe, CTC_ITEMS[0], {"chunk_length_s": 1.0}))
    ctc_matches(want, scored["transcription"][0], "pyfunc")


def test_whisper_prompt_is_the_generation_configs(bundle) -> None:
    """The bundle's decoder prompt is what Whisper's generate puts first for this generation_config:
    start, English, transcribe, no timestamps."""
    import json

    from tests.support.zoo.speech import WHISPER_SPECIALS

    model_dir, local_dir = bundle
    tok = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    info = json.loads((Path(local_dir) / "artifacts" / "serving.json").read_text())["generation"]
    names = ["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]
    assert set(names) <= set(WHISPER_SPECIALS)
    assert info["decoder_prompt_ids"] == tok.convert_tokens_to_ids(names)
    assert info["model_settings"]["suppress_tokens"] and info["model_settings"]["begin_suppress_tokens"]


def long_audio(seconds: float, seed: int) -> np.ndarray:
    """A recording past Whisper's window: tone, chirp and noise in turns of 7 s."""
    kinds = ["tone", "chirp", "noise"]
    parts, left, i = [], seconds, 0
    while left > 0:
        parts.append(synth_audio(min(7.0, left), kind=kinds[i % 3], seed=seed + i))
        left, i = left - 7.0, i + 1
    return np.concatenate(parts)


LONG_ITEMS: list[dict[str, Any]] = [
    {"audio": audio_file(long_audio(52.0, 0), format="FLAC")},
    {"audio": long_audio(36.5, 7).tolist(), "sampling_rate": 16000},
    {"audio": audio_file(synth_audio(4.0, kind="chirp", seed=5))},
]
LONG_PARAMS: list[dict[str, Any]] = [
    {"chunk_length_s": 30, "max_new_tokens": 12, "num_beams": 1},
    {
        "chunk_length_s": 20,
        "stride_length_s": 4,
        "return_timestamps": True,
        "language": "fr",
        "task": "translate",
        "max_new_tokens": 10,
        "num_beams": 1,
    },
    {"language": "french", "task": "translate", "return_timestamps": True, "max_new_tokens": 10},  # 5 beams
]


def long_expected(pipe: Any, item: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The pipeline's answer, its steps run one by one (`preprocess`, `_forward` of every chunk,
    `postprocess`: what its __call__ runs) to read its token ids too: every chunk's, concatenated."""
    samples = decoded(item)
    call = {k: v for k, v in params.items() if k not in ("max_new_tokens", "num_beams")}
    generate = {"do_sample": False, **{k: v for k, v in params.items() if k in ("max_new_tokens", "num_beams")}}
    pre, forward, post = pipe._sanitize_parameters(generate_kwargs=generate, **call)
    outputs = [pipe._forward(chunk, **forward) for chunk in pipe.preprocess(samples, **pre)]
    ids = [t for out in outputs for t in out["tokens"][0].tolist()]
    return {**pipe.postprocess(outputs, **post), "token_ids": ids}


def long_matches(exp: dict[str, Any], got: dict[str, Any], where: str) -> None:
    assert got["text"] == exp["text"] and got["token_ids"] == exp["token_ids"], where
    if "chunks" not in exp:
        assert "chunks" not in got, where
        return
    assert [c["text"] for c in got["chunks"]] == [c["text"] for c in exp["chunks"]], where
    for g, e in zip(got["chunks"], exp["chunks"], strict=True):
        assert (g["timestamp"][1] is None) == (e["timestamp"][1] is None), where
        assert np.allclose([x for x in g["timestamp"] if x is not None], [x for x in e["timestamp"] if x is not None])


def test_whisper_long_form_matches_pipeline(tiny_whisper) -> None:
    """Audio past the 30 s window in chunks (`chunk_length_s`, `stride_length_s`), segment
    timestamps, and the `language`/`task` params: text, timestamps and token ids as the pipeline's,
    through the gateway and in process; the bundle's pyfunc as MLflow's pyfunc of the source."""
    import mlflow.pyfunc
    import pandas as pd

    pipe = transformers.pipeline(TASK, model=str(tiny_whisper.model_dir))
    local_dir = tiny_whisper.local_dir
    records = [{"id": f"l{i}", **item} for i, item in enumerate(LONG_ITEMS)]
    here = InProcessPipeline(load_bundle(local_dir, ("tokenizer", "onnx")))
    with Stack(local_dir) as stack, Client(stack.gateway) as client:
        for params in LONG_PARAMS:
            items = LONG_ITEMS if params.get("chunk_length_s") else LONG_ITEMS[2:]
            chosen = records if params.get("chunk_length_s") else records[2:]
            answers = {"gateway": client.predict(chosen, params=params)}
            if params is LONG_PARAMS[1]:
                answers["in-process"] = here.predict(chosen, params=params)
            for i, item in enumerate(items):
                exp = long_expected(pipe, item, params)
                assert exp["token_ids"], "the oracle generated nothing: a useless check"
                for path, results in answers.items():
                    long_matches(exp, results[i]["transcription"], f"{path} {params} item {i}")
        for params, message in [
            ({"return_timestamps": "word"}, "word"),
            ({"chunk_length_s": 31}, "exceeds the model's 30 s window"),
            ({"language": "klingon"}, "param 'language': 'klingon' is not one of this model's languages ['en', 'fr']"),
            ({"task": "summarize"}, "param 'task': expected one of ['transcribe', 'translate']"),
        ]:
            with pytest.raises(grpc.RpcError) as err:
                client.predict(records[2:], params=params)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
            assert message in err.value.details()
        for params, message in [
            (None, "field 'audio' is 52.0 s long; this model takes at most 30 s per record (pass chunk_length_s"),
            # The third chunk's tokens: <|t|> x <|t|><|t|><|t|> x <|t|><|t|>: generate decodes again.
            ({"chunk_length_s": 30, "return_timestamps": True, "max_new_tokens": 12, "num_beams": 1}, "window again"),
        ]:
            with pytest.raises(grpc.RpcError) as err:
                client.predict(records[:1], params=params)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
            assert "record 0 (id='l0')" in err.value.details() and message in err.value.details()
        with pytest.raises(grpc.RpcError) as err:  # every row is a 30 s window: bounded before computing them
            client.predict(records[:1], params={"chunk_length_s": 2, "stride_length_s": 0.9})
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "into 251 chunks of 30 s windows; the limit is 1200 s of windows" in err.value.details()
    # MLflow's pyfunc of the source (the pipeline with these params: Whisper's text with timestamps,
    # stripped) and the bundle's (its signature types return_timestamps as a string).
    params = {**LONG_PARAMS[1], "chunk_length_s": 20.0, "stride_length_s": 4.0}
    theirs = mlflow.pyfunc.load_model(tiny_whisper.source_uri)._model_impl.predict(decoded(LONG_ITEMS[0]), params)
    frame = pd.DataFrame({"audio": [LONG_ITEMS[0]["audio"]]})
    ours = mlflow.pyfunc.load_model(local_dir).predict(frame, params={**params, "return_timestamps": "true"})
    assert theirs == [ours["transcription"][0]["text"]]
