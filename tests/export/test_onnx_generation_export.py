"""The generation graphs (`splitserve.export.onnx.decoder` / `.seq2seq`) on tiny random models:
the layout the model tier runs, parity with PyTorch (logits and greedy tokens, the export's own
checks), and the model tier's steppers over them (left padding, beams)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import transformers

from tests.support import zoo

pytestmark = pytest.mark.slow

TEXTS = ["Abraham Lincoln cut down a cherry tree", "x", "Élodie a visité Zürich et São Paulo en été."]


def _session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_decoder_graph(arch: str, tmp_path: Path) -> None:
    from model_svc.backends.onnx import OnnxDecoder
    from splitserve.export.onnx.decoder import export_decoder
    from splitserve.export.parity import check_generation_parity

    folder = zoo.save_tiny_lm(arch, tmp_path)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    onnx_dir = tmp_path / "onnx"
    assert export_decoder(model, onnx_dir) == "model.onnx"
    session = _session(onnx_dir / "model.onnx")
    inputs = {i.name: i.shape for i in session.get_inputs()}
    heads = 1 if arch == "llama" else 2
    assert list(inputs)[:3] == ["input_ids", "attention_mask", "position_ids"]
    assert inputs["past_key_values.1.value"][1:4:2] == [heads, 16]
    assert [o.name for o in session.get_outputs()] == ["logits"] + [
        f"present.{i}.{kv}" for i in range(2) for kv in ("key", "value")
    ]
    metrics = check_generation_parity(model, onnx_dir / "model.onnx", tok, 128, TEXTS, 1e-4)
    assert metrics["parity_max_scaled_diff"] < 1e-5
    # Beams: a prompt's state repeated and reordered as beam search does.
    stepper = OnnxDecoder(session)
    prompt = np.asarray(tok(TEXTS[0])["input_ids"])
    logits, state, _ = stepper.start(prompt, beams=3)
    assert logits.shape[0] == 3 and np.allclose(logits[0], logits[2])
    state = stepper.reorder(state, np.asarray([2, 2, 0]))
    logits, state = stepper.step(np.asarray([5, 6, 5]), state)
    assert np.allclose(logits[0], logits[2], atol=1e-5) and not np.allclose(logits[0], logits[1])


@pytest.mark.parametrize("arch", ["t5", "bart"])
def test_seq2seq_graphs(arch: str, tmp_path: Path) -> None:
    from splitserve.export.onnx.seq2seq import export_seq2seq
    from splitserve.export.parity import check_seq2seq_parity

    folder = zoo.save_tiny_seq2seq(arch, tmp_path)
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(str(folder)).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    onnx_dir = tmp_path / "onnx"
    graphs = ("encoder_model.onnx", export_seq2seq(model, onnx_dir))
    assert graphs[1] == "decoder_model.onnx"
    encoder, decoder = (_session(onnx_dir / g) for g in graphs)
    assert [i.name for i in encoder.get_inputs()] == ["input_ids", "attention_mask"]
    cross = [f"present.{i}.encoder.{kv}" for i in range(2) for kv in ("key", "value")]
    assert [o.name for o in encoder.get_outputs()] == ["last_hidden_state", *cross]
    names = [i.name for i in decoder.get_inputs()]
    assert names[:2] == ["input_ids", "encoder_attention_mask"] and "use_cache_branch" not in names
    assert {n.replace("past_key_values.", "present.") for n in names if ".encoder." in n} == set(cross)
    assert [o.name for o in decoder.get_outputs()] == ["logits"] + [
        f"present.{i}.decoder.{kv}" for i in range(2) for kv in ("key", "value")
    ]
    start = int(model.config.decoder_start_token_id)
    metrics = check_seq2seq_parity(model, onnx_dir, graphs, tok, 64, TEXTS, 1e-4, start)
    assert metrics["parity_max_scaled_diff"] < 1e-5


def test_whisper_graphs(tmp_path: Path) -> None:
    from splitserve.core.generation import GenerationInfo, ModelDecoding
    from splitserve.export.audio import check_whisper_parity, sample_audio
    from splitserve.export.onnx.seq2seq import export_seq2seq

    folder = zoo.save_tiny_whisper(tmp_path)
    model = transformers.WhisperForConditionalGeneration.from_pretrained(str(folder)).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    features = transformers.WhisperFeatureExtractor.from_pretrained(str(folder))
    onnx_dir = tmp_path / "onnx"
    graphs = ("encoder_model.onnx", export_seq2seq(model, onnx_dir))
    assert [i.name for i in _session(onnx_dir / graphs[0]).get_inputs()] == ["input_features"]
    assert "encoder_attention_mask" not in [i.name for i in _session(onnx_dir / graphs[1]).get_inputs()]
    prompt = tok.convert_tokens_to_ids(["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"])
    info = GenerationInfo(
        "encoder-decoder", "automatic-speech-recognition", [], [], 2, 2, 2, 16, [], None, ModelDecoding(), {}
    )
    info.decoder_prompt_ids = prompt
    metrics = check_whisper_parity(model, features, onnx_dir, graphs, sample_audio(16000), 1e-4, info)
    assert metrics["parity_max_scaled_diff"] < 5e-5


@pytest.mark.parametrize(
    ("config", "says"),
    [
        (lambda: transformers.MambaConfig(hidden_size=16, num_hidden_layers=1, vocab_size=50, state_size=4),
         "its cache holds ['LinearAttentionLayer'], not one key/value pair per layer"),
        (lambda: transformers.RecurrentGemmaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=3,
            num_attention_heads=2, num_key_value_heads=1, vocab_size=50, lru_width=16, attention_window_size=8),
         "it returns no key/value cache"),
    ],
)  # fmt: skip
def test_models_without_a_key_value_cache_are_refused_in_one_line(config, says: str, tmp_path: Path) -> None:
    from splitserve.core.errors import ExportError
    from splitserve.export.onnx.decoder import export_decoder

    model = transformers.AutoModelForCausalLM.from_config(config()).eval()
    with pytest.raises(ExportError) as caught:
        export_decoder(model, tmp_path)
    assert str(caught.value).endswith(says) and "\n" not in str(caught.value)
    assert str(caught.value).startswith(f"cannot export {type(model).__name__} (")
