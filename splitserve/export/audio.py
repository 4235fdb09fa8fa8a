"""Export of the audio tasks: the feature extractor (and tokenizer) saved beside the graphs, the
graphs checked against PyTorch on synthesized audio, and what the stages need to know: the rate,
the window, the inputs' types and shapes, and for Whisper the decoder's prompt and suppressed
tokens as its `generate` sets them for the model's generation_config."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from splitserve.core.bundle import ServingConfig, hash_tree
from splitserve.core.errors import ExportError
from splitserve.core.generation import OUTPUT, GenerationInfo, ModelDecoding
from splitserve.export.generation import (
    UNSUPPORTED_GENERATION_SETTINGS,
    _eos_ids,
    decoding_defaults,
    pipeline_generation_config,
)
from splitserve.export.onnx import export_graphs, output_shapes
from splitserve.export.parity import Parity, decoder_two_steps
from splitserve.tasks.base import Task

# The longest audio an encoder-only audio bundle takes per record (seconds), unless the
# preprocess tier's max_audio_seconds is lower.
MAX_AUDIO_SECONDS = 600.0
WHISPER_ONLY = {"suppress_tokens", "begin_suppress_tokens"}  # settings the loop implements for Whisper


def sample_audio(rate: int) -> list[np.ndarray]:
    """Synthesized audio the graphs are checked on: tones, noise, a chirp, silence; short and long."""
    rng = np.random.default_rng(0)
    t = np.arange(int(rate * 2.5)) / rate
    return [
        (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32),
        (0.1 * rng.standard_normal(rate)).astype(np.float32),
        (0.3 * np.sin(2 * np.pi * (200 + 400 * t[: rate * 2]) * t[: rate * 2])).astype(np.float32),
        np.zeros(rate // 2, dtype=np.float32),
        (0.2 * rng.standard_normal(rate // 10)).astype(np.float32),
    ]


def export_audio(
    components: dict[str, Any],
    task: Task,
    pipeline_task: str,
    source_uri: str,
    tmp: Path,
    name: str,
    defaults: dict[str, Any],
    tolerance: float,
    max_new_tokens_limit: int,
    register: str | None,
    step: Callable[[str], Any],
    done: Callable[[Any, str], None],
) -> str:
    """The audio bundle of `components`, logged; returns its URI."""
    from splitserve.export import log_serving_bundle

    model, features = components["model"].float().eval(), components.get("feature_extractor")
    tokenizer = components.get("tokenizer")
    if features is None:
        raise ExportError(f"the source model of task {task.name} has no feature extractor")
    artifacts = tmp / "artifacts"
    onnx_dir, tok_dir = artifacts / "onnx", artifacts / "tokenizer"
    ctc = task.export.parity == "audio-seq2seq" and type(model).__name__.endswith("ForCTC")
    t = step("Exporting to ONNX")
    if ctc:  # one encoder graph with the CTC head, no past
        if getattr(model.config, "add_adapter", False):
            raise ExportError("CTC models with an adapter after the feature encoder are not supported yet")
        onnx_file = export_graphs(model, "encoder", onnx_dir, ("logits",))
    elif task.export.parity == "audio-seq2seq":
        onnx_file = export_graphs(model, "seq2seq", onnx_dir)
    else:
        onnx_file = export_graphs(model, "encoder", onnx_dir, task.export.outputs)
    features.save_pretrained(str(tok_dir))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(tok_dir))
    done(t, "Exported ONNX graph")
    t = step("Checking ONNX against PyTorch on synthesized audio")
    rate = int(features.sampling_rate)
    waves = sample_audio(rate)
    generation, conv_layers = None, []
    if task.export.parity == "audio-seq2seq" and not ctc:
        if tokenizer is None or not getattr(tokenizer, "is_fast", False):
            raise ExportError("automatic-speech-recognition needs the model's fast tokenizer")
        if type(model).__name__ != "WhisperForConditionalGeneration":
            raise ExportError(
                f"automatic-speech-recognition: only Whisper-style encoder-decoders are supported, got {type(model).__name__}"
            )
        generation = whisper_info(model, tokenizer, features, onnx_dir, task, pipeline_task, max_new_tokens_limit)
        parity = check_whisper_parity(model, features, onnx_dir, task.export.graphs, waves, tolerance, generation)
        inputs, dtypes = ["input_features"], {"input_features": "FP32"}
        shapes = {"input_features": [-1, int(features.feature_size), int(features.nb_max_frames)]}
        outputs, out_shapes = [OUTPUT], {OUTPUT: [-1, -1]}
        max_length, window, exact = int(model.config.max_target_positions), float(features.chunk_length), False
    else:
        parity = check_audio_parity(model, features, onnx_dir / onnx_file, waves, list(task.export.outputs), tolerance)
        inputs, dtypes = ["input_values", "attention_mask"], {"input_values": "FP32", "attention_mask": "INT8"}
        shapes = {}
        outputs = list(task.export.outputs)
        out_shapes = output_shapes(onnx_dir / onnx_file, outputs)
        max_length, window, exact = int(MAX_AUDIO_SECONDS * rate), MAX_AUDIO_SECONDS, True
        if ctc:
            conv_layers = [
                [int(k), int(s)] for k, s in zip(model.config.conv_kernel, model.config.conv_stride, strict=True)
            ]
    done(
        t,
        f"ONNX matches PyTorch (max abs diff {parity['parity_max_abs_diff']:.2e}, {parity['parity_max_scaled_diff']:.1e} of its scale)",
    )
    config = ServingConfig(
        name=name,
        task=task.name,
        source_model_uri=source_uri,
        model_inputs=inputs,
        model_outputs=outputs,
        max_length=max_length,
        output_shapes=out_shapes,
        id2label={int(k): v for k, v in model.config.id2label.items()} if task.export.labels else None,
        problem_type=getattr(model.config, "problem_type", None),
        defaults=defaults,
        parity=parity,
        artifacts={"tokenizer": hash_tree(tok_dir), "onnx": hash_tree(onnx_dir)},
        generation=generation,
        onnx_file=onnx_file,
        input_types=dtypes,
        input_shapes=shapes,
        exact_lengths=exact,
        sampling_rate=rate,
        max_audio_seconds=window,
        conv_layers=conv_layers,
    )
    return log_serving_bundle(task, config, artifacts, register, step, done)


def check_audio_parity(
    model: Any, features: Any, path: Path, waves: list[np.ndarray], outputs: list[str], tolerance: float
) -> dict[str, float]:
    """The encoder graph against PyTorch, each sample alone (as the pipeline runs it)."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    parity = Parity(tolerance)
    for wave in waves:
        values = features(wave, sampling_rate=features.sampling_rate, return_tensors="np")["input_values"]
        values = np.asarray(values, dtype=np.float32)
        with torch.inference_mode():
            expected = model(input_values=torch.from_numpy(values))
        got = dict(zip(outputs, session.run(outputs, {"input_values": values}), strict=True))
        for name in outputs:
            parity.compare(expected[name].float().numpy(), got[name], f"ONNX output {name!r}")
    return parity.metrics()


def whisper_info(
    model: Any,
    tokenizer: Any,
    features: Any,
    onnx_dir: Path,
    task: Task,
    pipeline_task: str,
    max_new_tokens_limit: int,
) -> GenerationInfo:
    """What the decoding loop needs, as Whisper's `generate` sets it up for a short-form
    transcription in the pipeline: the decoder's prompt (start, language, task, no-timestamps),
    the suppressed tokens, eos, and the request params' defaults."""
    import onnxruntime as ort
    import torch

    gc, _ = pipeline_generation_config(model, pipeline_task, tokenizer=tokenizer, feature_extractor=features)
    unsupported = {
        n: getattr(gc, n)
        for n, neutral in UNSUPPORTED_GENERATION_SETTINGS.items()
        if n not in WHISPER_ONLY and getattr(gc, n, neutral) not in (neutral, None)
    }
    if getattr(gc, "return_timestamps", False):
        unsupported["return_timestamps"] = True
    if getattr(gc, "lang_to_id", None) and getattr(gc, "language", None) is None:
        forced = getattr(gc, "forced_decoder_ids", None) or getattr(model.config, "forced_decoder_ids", None)
        if not forced or forced[0][0] != 1 or forced[0][1] is None:
            unsupported["language"] = None  # generate would detect each record's language
    if unsupported:
        raise ExportError(
            f"the model's generation_config sets {unsupported}, which splitserve's decoding loop does not "
            "implement (language detection, timestamps, ...); refusing to export (set generation_config.language "
            "for a multilingual Whisper)"
        )
    model._set_return_timestamps(return_timestamps=None, is_shortform=True, generation_config=gc)
    model._set_language_and_task(language=None, task=None, is_multilingual=None, generation_config=gc)
    frames = torch.zeros(1, int(features.feature_size), int(features.nb_max_frames))
    init = model._retrieve_init_tokens(frames, 1, gc, model.config, int(features.nb_max_frames), {})
    prompt = [int(x) for x in init[0].tolist()]
    session = ort.InferenceSession(str(onnx_dir / task.export.graphs[-1]), providers=["CPUExecutionProvider"])
    graph_inputs = {i.name: i.shape for i in session.get_inputs()}
    past = sorted(n for n in graph_inputs if n.startswith("past_key_values."))
    _, kv_heads, _, head_dim = graph_inputs[past[0]]
    max_new_tokens = gc.max_new_tokens
    if max_new_tokens is None and gc.max_length is not None:
        max_new_tokens = int(gc.max_length) - len(prompt)
    defaults = decoding_defaults(gc, max_new_tokens)
    languages = {str(k): int(v) for k, v in (getattr(gc, "lang_to_id", None) or {}).items()}
    tasks = {str(k): int(v) for k, v in (getattr(gc, "task_to_id", None) or {}).items()}
    no_timestamps = getattr(gc, "no_timestamps_token_id", None)
    initial = getattr(gc, "max_initial_timestamp_index", None)
    prompt_tokens = {*prompt, *languages.values(), *tasks.values(), *([] if no_timestamps is None else [no_timestamps])}
    return GenerationInfo(
        architecture="encoder-decoder",
        pipeline_task=pipeline_task,
        graph_inputs=list(graph_inputs),
        graph_outputs=[o.name for o in session.get_outputs()],
        num_layers=len([n for n in past if n.endswith(".key")]) // 2,
        num_attention_heads=int(model.config.decoder_attention_heads),
        num_kv_heads=int(kv_heads),
        head_dim=int(head_dim),
        eos_token_ids=_eos_ids(gc.eos_token_id),
        pad_token_id=None if gc.pad_token_id is None else int(gc.pad_token_id),
        model_settings=ModelDecoding(
            min_length=int(gc.min_length or 0),
            suppress_tokens=[int(x) for x in gc.suppress_tokens or []],
            begin_suppress_tokens=[int(x) for x in gc.begin_suppress_tokens or []],
            no_timestamps_token_id=None if no_timestamps is None else int(no_timestamps),
            max_initial_timestamp_index=None if initial is None else int(initial),
            prompt_token_ids=sorted(int(t) for t in prompt_tokens),
        ),
        defaults=defaults,
        max_new_tokens_limit=int(max_new_tokens_limit),
        encoder_file=task.export.graphs[0],
        decoder_start_token_id=int(gc.decoder_start_token_id),
        decoder_prompt_ids=prompt,
        languages=languages,
        tasks=tasks,
    )


def check_whisper_parity(
    model: Any,
    features: Any,
    onnx_dir: Path,
    graphs: tuple[str, ...],
    waves: list[np.ndarray],
    tolerance: float,
    info: GenerationInfo,
) -> dict[str, float]:
    """The encoder's hidden states and the decoder's logits (the prompt's step, then one step with
    its past) against PyTorch; then the greedy tokens after the decoder's prompt for the samples in
    one batch (the model tier's `OnnxEncoderDecoder`) against PyTorch's `generate(do_sample=False)`,
    exactly."""
    import onnxruntime as ort
    import torch

    from model_svc.backends.onnx import OnnxEncoderDecoder
    from splitserve.export.onnx.decoder import cache_kwarg, cache_of
    from splitserve.export.parity import cross_feeds, onnx_greedy, same_tokens, torch_greedy
    from splitserve.tasks.automatic_speech_recognition import log_mel

    encoder = ort.InferenceSession(str(onnx_dir / graphs[0]), providers=["CPUExecutionProvider"])
    decoder = ort.InferenceSession(str(onnx_dir / graphs[1]), providers=["CPUExecutionProvider"])
    prompt = np.asarray([info.decoder_prompt_ids], dtype=np.int64)
    kwarg = cache_kwarg(model)
    parity = Parity(tolerance)
    for wave in waves[:3]:
        feats = log_mel(features, wave)[None]
        hidden, cross = cross_feeds(encoder, {"input_features": feats})
        first, nxt, second = decoder_two_steps(decoder, prompt, cross)
        with torch.inference_mode():
            t_hidden = model.get_encoder()(input_features=torch.from_numpy(feats)).last_hidden_state
            t1 = model(encoder_outputs=(t_hidden,), decoder_input_ids=torch.from_numpy(prompt), use_cache=True)
            t2 = model(
                encoder_outputs=(t_hidden,),
                decoder_input_ids=torch.tensor([[nxt]]),
                **{kwarg: cache_of(t1)},
                use_cache=True,
            )
        for expected, actual, what in [
            (t_hidden[0].float().numpy(), hidden[0], "ONNX encoder hidden states"),
            (t1.logits[0].float().numpy(), first[0], "ONNX decoder logits (prompt)"),
            (t2.logits[0].float().numpy(), second[0], "ONNX decoder logits (with past)"),
        ]:
            parity.compare(expected, actual, what)
    batch = [log_mel(features, wave) for wave in waves[:3]]
    expected = torch_greedy(model, {"input_features": np.stack(batch)}, prompt[0])
    stepper = OnnxEncoderDecoder(encoder, decoder, list(info.decoder_prompt_ids))
    same_tokens(expected, onnx_greedy(stepper, batch), "ONNX greedy tokens")
    return parity.metrics()
