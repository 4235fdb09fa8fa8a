"""`splitserve export`: source MLflow transformers model -> ONNX -> parity check -> serving bundle.

Heavy dependencies (torch, optimum, mlflow, onnxruntime) are imported inside `export_bundle`.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from splitserve import params as params_mod
from splitserve.bundle import CONFIG_FILE, ServingConfig, hash_tree
from splitserve.errors import ExportError

# task -> (optimum's task name, the model outputs the stages read; the first is the main one)
TASK_OUTPUTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "feature-extraction": ("feature-extraction", ("last_hidden_state",)),
    "text-classification": ("text-classification", ("logits",)),
    "token-classification": ("token-classification", ("logits",)),
    "fill-mask": ("fill-mask", ("logits",)),
    "question-answering": ("question-answering", ("start_logits", "end_logits")),
    "zero-shot-classification": ("text-classification", ("logits",)),  # an NLI sequence classifier
    # A decoder with past key values (one graph; the first step feeds an empty past). The model
    # tier runs the decoding loop and returns the generated ids (model_svc/generation.py).
    "text-generation": ("text-generation-with-past", ("logits",)),
    # Encoder-decoders: Optimum's encoder graph and merged decoder graph (with and without past).
    **dict.fromkeys(params_mod.ENCODER_DECODER_TASKS, ("text2text-generation-with-past", ("logits",))),
}
GENERATION_TASKS = set(params_mod.GENERATION_TASKS)
ENCODER_FILE, MERGED_DECODER_FILE = "encoder_model.onnx", "decoder_model_merged.onnx"
# Most new tokens one request may ask for, unless export says otherwise (`max_new_tokens_limit`).
DEFAULT_MAX_NEW_TOKENS_LIMIT = 256
# Tasks whose model config's labels the stages read.
LABEL_TASKS = {"text-classification", "token-classification", "zero-shot-classification"}
# Outputs with one value per token although they are [batch, tokens] (not [batch, tokens, n]).
TOKEN_OUTPUTS_2D = {"start_logits", "end_logits"}

# Texts the ONNX graph is checked on against PyTorch: scripts, emoji, odd spacing, a long one.
SAMPLE_TEXTS = [
    "Abraham Lincoln cut down a cherry tree",
    "Florida has nice beaches",
    "Élodie a visité Zürich et São Paulo en été.",
    "東京タワーに行きました。北京欢迎你",
    "I ❤️ Paris 🗼 and naïve café crème",
    "multiple    spaces\tand\nnewlines   here",
    "x",
    " ".join(["The quick brown fox jumps over the lazy dog."] * 120),
]

# More texts for the int8 quality gate (with SAMPLE_TEXTS): 8 texts are too few to measure 99%
# agreement. Docstring-like English, questions, sentiment, names and places, numbers, code,
# accents, CJK, Arabic, Cyrillic, emoji; short and long.
QUALITY_TEXTS = [
    "Return the number of items in the queue, or zero when it is empty.",
    "Load the configuration file and validate every field against the schema.",
    "Raises ValueError if the timeout is negative.",
    "This function is deprecated and will be removed in the next major release.",
    "Compute the cosine similarity between two vectors of the same length.",
    "Which state is good for a seaside holiday?",
    "How do I reset my password if I no longer have access to my email?",
    "What time does the museum open on Sundays?",
    "Is it going to rain in Seattle tomorrow afternoon?",
    "I absolutely loved this movie, the acting was superb!",
    "The service was slow and the food arrived cold. Never again.",
    "It was fine, I guess. Nothing special, nothing terrible.",
    "Worst purchase I have ever made; it broke after two days.",
    "What a wonderful surprise, thank you so much for the flowers!",
    "Angela Merkel met Emmanuel Macron in Berlin on Tuesday.",
    "Microsoft and NASA announced a partnership to study climate data.",
    "Barack Obama was born in Honolulu, Hawaii, in 1961.",
    "The United Nations headquarters is located in New York City.",
    "Søren Kierkegaard wrote Either/Or while living in Copenhagen.",
    "Toyota opened a new factory near Kraków last spring.",
    "The invoice total is $1,249.99, due on 2024-03-15.",
    "Call +1 (555) 010-2030 between 9am and 5pm, Monday to Friday.",
    "Version 3.11.4 fixes a memory leak in the HTTP client.",
    "for i in range(10): print(i ** 2)",
    "SELECT name, email FROM users WHERE created_at > NOW() - INTERVAL '7 days';",
    "Please see https://example.com/docs/install for installation instructions.",
    "The mitochondria is the powerhouse of the cell.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The Treaty of Westphalia ended the Thirty Years' War in 1648.",
    "Water boils at 100 degrees Celsius at sea level.",
    "She sells seashells by the seashore.",
    "Après le déjeuner, nous avons flâné le long de la Seine.",
    "¿Dónde está la estación de tren más cercana?",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Zoë Núñez a étudié à Montréal avant de partir pour Reykjavík.",
    "Ich möchte gern einen Kaffee mit Milch, bitte.",
    "Москва — столица России.",
    "مرحبا بالعالم، كيف حالك اليوم؟",
    "今日はとても良い天気ですね。散歩に行きましょう。",
    "我喜欢在周末去公园跑步。",
    "서울은 대한민국의 수도입니다.",
    "東京大学の研究チームが新しい材料を発見した。",
    "The meeting has been moved to Thursday 🙂 see you there!",
    "Great job team 🎉🎉🎉",
    "ok",
    "Why?",
    "no no no no no",
    "A man is playing a guitar on the street corner while people walk by.",
    "Two dogs are running through a field of tall grass.",
    "The new phone has a faster processor, a better camera and a longer battery life, "
    "but it is also considerably more expensive than last year's model.",
    "Despite the heavy traffic on the highway, we arrived at the airport with plenty of time "
    "to spare, checked our bags, and had a quick breakfast before boarding the flight to Lisbon.",
]

# Model types whose position ids start after the padding index (RoBERTa family).
PADDING_OFFSET_TYPES = {"roberta", "xlm-roberta", "camembert", "longformer", "data2vec-text", "xlm-roberta-xl"}


def max_length_of(tokenizer: Any, model_config: Any) -> int:
    candidates = []
    if 0 < getattr(tokenizer, "model_max_length", 0) < 100_000:
        candidates.append(int(tokenizer.model_max_length))
    positions = getattr(model_config, "max_position_embeddings", None)
    if positions:
        if model_config.model_type in PADDING_OFFSET_TYPES:
            positions -= (model_config.pad_token_id or 0) + 1
        candidates.append(int(positions))
    if not candidates:
        raise ExportError("cannot tell the model's maximum sequence length")
    return min(candidates)


def bundle_name(source_uri: str, name: str | None, register: str | None) -> str:
    if name:
        return name
    if register:
        return register
    if source_uri.startswith("models:/") and not source_uri.startswith("models:/m-"):
        return source_uri[len("models:/") :].split("/")[0].split("@")[0]
    return "model"


def check_parity(
    model: Any,
    onnx_path: Path,
    tokenizer: Any,
    max_length: int,
    inputs: list[str],
    outputs: str | tuple[str, ...] | list[str],
    tolerance: float,
) -> dict[str, float]:
    """Run PyTorch and ONNX Runtime on the same batch and compare every output; fail past
    `tolerance` (abs + rel) on any. The metrics are the worst over all outputs."""
    import onnxruntime as ort
    import torch

    names_out = [outputs] if isinstance(outputs, str) else list(outputs)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    enc = tokenizer(SAMPLE_TEXTS, padding=True, truncation=True, max_length=max_length, return_tensors="np")
    feeds = {n: enc[n].astype(np.int64) if n in enc else np.zeros_like(enc["input_ids"], dtype=np.int64) for n in names}
    with torch.inference_mode():
        torch_out = model(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    onnx_out = dict(zip(names_out, session.run(names_out, feeds), strict=True))
    mask = enc["attention_mask"].astype(bool)
    max_abs = max_rel = 0.0
    for output in names_out:
        expected, actual = torch_out[output].float().numpy(), onnx_out[output]
        if expected.ndim == 3 or output in TOKEN_OUTPUTS_2D:  # token-level outputs: compare real tokens only
            expected, actual = expected[mask], actual[mask]
        abs_diff, rel_diff = _compare(expected, actual, tolerance, f"ONNX output {output!r}")
        max_abs, max_rel = max(max_abs, abs_diff), max(max_rel, rel_diff)
    return {"parity_max_abs_diff": max_abs, "parity_max_rel_diff": max_rel, "parity_tolerance": tolerance}


def _compare(expected: np.ndarray, actual: np.ndarray, tolerance: float, what: str) -> tuple[float, float]:
    """Max abs and rel difference; ExportError past `tolerance` (abs + rel)."""
    diff = np.abs(expected - actual)
    if not bool(np.all(diff <= tolerance + tolerance * np.abs(expected))):
        raise ExportError(
            f"{what} differs from PyTorch by up to {float(diff.max()):.3g} (tolerance {tolerance:g}); refusing to export"
        )
    return float(diff.max()), float((diff / np.maximum(np.abs(expected), 1e-6)).max())


def check_generation_parity(
    model: Any, onnx_path: Path, tokenizer: Any, max_length: int, texts: list[str], tolerance: float
) -> dict[str, float]:
    """The decoder graph against PyTorch: the logits of every prompt position (prefill, empty past)
    and of one more step fed the graph's own present key values; fail past `tolerance`."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    out_names = [o.name for o in session.get_outputs()]
    past_names = [n for n in inputs if n.startswith("past_key_values.")]
    max_abs = max_rel = 0.0
    for text in texts:
        ids = np.asarray([tokenizer(text, truncation=True, max_length=max_length - 1)["input_ids"]], dtype=np.int64)
        n = ids.shape[1]
        feeds: dict[str, np.ndarray] = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "position_ids" in inputs:
            feeds["position_ids"] = np.arange(n, dtype=np.int64)[None]
        for name in past_names:
            _, heads, _, dim = inputs[name].shape
            feeds[name] = np.zeros((1, int(heads), 0, int(dim)), dtype=np.float32)
        with torch.inference_mode():
            kwargs = {"position_ids": torch.arange(n)[None]} if "position_ids" in inputs else {}
            t_out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.ones(1, n, dtype=torch.long), **kwargs)
            o_out = dict(zip(out_names, session.run(out_names, feeds), strict=True))
            steps = [(t_out.logits[0].float().numpy(), o_out["logits"][0])]
            nxt = int(o_out["logits"][0, -1].argmax())
            feeds2: dict[str, np.ndarray] = {
                "input_ids": np.asarray([[nxt]], dtype=np.int64),
                "attention_mask": np.ones((1, n + 1), dtype=np.int64),
            }
            if "position_ids" in inputs:
                feeds2["position_ids"] = np.asarray([[n]], dtype=np.int64)
            for name in past_names:
                feeds2[name] = o_out[name.replace("past_key_values.", "present.")]
            kwargs = {"position_ids": torch.tensor([[n]])} if "position_ids" in inputs else {}
            t2 = model(
                input_ids=torch.tensor([[nxt]]),
                attention_mask=torch.ones(1, n + 1, dtype=torch.long),
                past_key_values=t_out.past_key_values,
                **kwargs,
            )
            o2 = session.run(["logits"], feeds2)[0]
            steps.append((t2.logits[0].float().numpy(), o2[0]))
        for expected, actual in steps:
            abs_diff, rel_diff = _compare(expected, actual, tolerance, "ONNX decoder logits")
            max_abs, max_rel = max(max_abs, abs_diff), max(max_rel, rel_diff)
    return {"parity_max_abs_diff": max_abs, "parity_max_rel_diff": max_rel, "parity_tolerance": tolerance}


def check_seq2seq_parity(
    model: Any, onnx_dir: Path, tokenizer: Any, max_length: int, texts: list[str], tolerance: float, start_id: int
) -> dict[str, float]:
    """The encoder and merged decoder graphs against PyTorch: the encoder's hidden states, the
    decoder's logits on the first step (no past) and on one more step fed the graph's own past key
    values; fail past `tolerance`."""
    import onnxruntime as ort
    import torch

    from model_svc.backends.torch import encode

    encoder = ort.InferenceSession(str(onnx_dir / ENCODER_FILE), providers=["CPUExecutionProvider"])
    decoder = ort.InferenceSession(str(onnx_dir / MERGED_DECODER_FILE), providers=["CPUExecutionProvider"])
    inputs = {i.name: i.shape for i in decoder.get_inputs()}
    past_names = [n for n in inputs if n.startswith("past_key_values.")]
    outputs = ["logits", *(n.replace("past_key_values.", "present.", 1) for n in past_names)]
    max_abs = max_rel = 0.0
    for text in texts:
        ids = np.asarray([tokenizer(text, truncation=True, max_length=max_length)["input_ids"]], dtype=np.int64)
        mask = np.ones_like(ids)
        (hidden,) = encoder.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask})
        _, heads, _, dim = inputs[past_names[0]]
        feeds: dict[str, np.ndarray] = {
            "input_ids": np.asarray([[start_id]], dtype=np.int64),
            "encoder_hidden_states": hidden,
            "encoder_attention_mask": mask,
            "use_cache_branch": np.asarray([False]),
            **dict.fromkeys(past_names, np.zeros((1, int(heads), 0, int(dim)), dtype=np.float32)),
        }
        first = dict(zip(outputs, decoder.run(outputs, feeds), strict=True))
        nxt = int(first["logits"][0, -1].argmax())
        feeds.update(
            {n: first[n.replace("past_key_values.", "present.", 1)] for n in past_names},
            input_ids=np.asarray([[nxt]], dtype=np.int64),
            use_cache_branch=np.asarray([True]),
        )
        second = decoder.run(["logits"], feeds)[0]
        with torch.inference_mode():
            t_ids, t_mask = torch.from_numpy(ids), torch.from_numpy(mask)
            t_hidden = encode(model, t_ids, t_mask)
            t1 = model(encoder_outputs=(t_hidden,), attention_mask=t_mask, decoder_input_ids=torch.tensor([[start_id]]))
            t2 = model(
                encoder_outputs=(t_hidden,),
                attention_mask=t_mask,
                decoder_input_ids=torch.tensor([[nxt]]),
                past_key_values=t1.past_key_values,
            )
        pairs = [
            (t_hidden[0].float().numpy(), hidden[0], "ONNX encoder hidden states"),
            (t1.logits[0].float().numpy(), first["logits"][0], "ONNX decoder logits (first step)"),
            (t2.logits[0].float().numpy(), second[0], "ONNX decoder logits (with past)"),
        ]
        for expected, actual, what in pairs:
            abs_diff, rel_diff = _compare(expected, actual, tolerance, what)
            max_abs, max_rel = max(max_abs, abs_diff), max(max_rel, rel_diff)
    return {"parity_max_abs_diff": max_abs, "parity_max_rel_diff": max_rel, "parity_tolerance": tolerance}


# generation_config settings the decoding loop (model_svc/generation.py) does not implement, with
# the value that makes each a no-op; a model that sets one is refused at export.
UNSUPPORTED_GENERATION_SETTINGS: dict[str, Any] = {
    "num_beam_groups": 1,
    "penalty_alpha": None,
    "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "force_words_ids": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "sequence_bias": None,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "min_p": None,
    "exponential_decay_length_penalty": None,
    "num_return_sequences": 1,
    "diversity_penalty": 0.0,
    "encoder_repetition_penalty": 1.0,
}


def _eos_ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in (value if isinstance(value, (list, tuple)) else [value])]


def generation_info(
    model: Any, tokenizer: Any, onnx_dir: Path, source_uri: str, max_new_tokens_limit: int, pipeline_task: str
) -> tuple[dict[str, Any], str | None]:
    """What the stages need to generate: the decoder graph's names and past shapes, eos ids, the
    model's own decoding settings (forced tokens, min length), the defaults of the request params
    from the model's generation_config as the task's pipeline resolves them (the pipeline's own
    defaults where the model sets none), the max_new_tokens limit, the encoder-decoder's decoder
    start token and the pipeline's `prefix`; and the source model's MLflow prompt_template."""
    import mlflow
    import onnxruntime as ort
    import transformers

    encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
    pipe = transformers.pipeline(pipeline_task, model=model, tokenizer=tokenizer)  # type: ignore[call-overload]
    prefix = getattr(pipe, "prefix", None) or None
    if prefix and not encoder_decoder:
        raise ExportError("models with a config `prefix` are not supported for text-generation yet")
    if getattr(tokenizer, "_build_translation_inputs", None) is not None:
        raise ExportError(
            f"{type(tokenizer).__name__} takes src_lang/tgt_lang (multilingual translation); not supported yet"
        )
    graph = onnx_dir / (MERGED_DECODER_FILE if encoder_decoder else "model.onnx")
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    graph_inputs = {i.name: i.shape for i in session.get_inputs()}
    past = sorted(n for n in graph_inputs if n.startswith("past_key_values."))
    if not past or "logits" not in {o.name for o in session.get_outputs()}:
        raise ExportError(f"the exported decoder has no past key values inputs / logits: {sorted(graph_inputs)}")
    _, kv_heads, _, head_dim = graph_inputs[past[0]]
    gc = pipe.generation_config
    unsupported = {
        name: getattr(gc, name)
        for name, neutral in UNSUPPORTED_GENERATION_SETTINGS.items()
        if getattr(gc, name, neutral) not in (neutral, None)
    }
    if unsupported:
        raise ExportError(
            f"the model's generation_config sets {unsupported}, which splitserve's decoding loop does not "
            "implement yet (its output would differ from the pipeline's); refusing to export"
        )
    max_new_tokens = model.generation_config.max_new_tokens  # None: splitserve's 32
    if max_new_tokens is None and encoder_decoder and gc.max_length not in (None, 20):  # 20: transformers' default
        max_new_tokens = int(gc.max_length) - 1  # the decoder starts from one token
    defaults = {
        "max_new_tokens": max_new_tokens,
        "do_sample": bool(gc.do_sample),
        "temperature": float(gc.temperature) if gc.temperature is not None else 1.0,
        "top_k": int(gc.top_k) if gc.top_k else None,
        "top_p": float(gc.top_p) if gc.top_p is not None else 1.0,
        "repetition_penalty": float(gc.repetition_penalty) if gc.repetition_penalty is not None else 1.0,
        "num_beams": int(gc.num_beams or 1),
        "length_penalty": float(gc.length_penalty) if gc.length_penalty is not None else 1.0,
        "early_stopping": gc.early_stopping if gc.early_stopping in (True, False, "never") else False,
        "no_repeat_ngram_size": int(gc.no_repeat_ngram_size or 0),
        "min_new_tokens": int(gc.min_new_tokens or 0),
    }
    info = mlflow.models.get_model_info(source_uri)
    template = (info.metadata or {}).get("prompt_template")
    pyfunc_conf = info.flavors.get("python_function", {})
    model_config = pyfunc_conf.get("model_config") or pyfunc_conf.get("config") or {}
    # The source model's MLflow model_config: request params' defaults, where they are params.
    accepted = params_mod.accepted(params_mod.ENCODER_DECODER_TASKS[0] if encoder_decoder else "text-generation")
    for name, value in model_config.items():
        if name in accepted and name != "return_full_text":
            defaults[name] = accepted[name][0](f"model_config {name}", value)
    generation: dict[str, Any] = {
        "architecture": "encoder-decoder" if encoder_decoder else "decoder",
        "pipeline_task": pipeline_task,
        "graph_inputs": list(graph_inputs),
        "graph_outputs": [o.name for o in session.get_outputs()],
        "num_layers": len([n for n in past if n.endswith(".key")]) // (2 if encoder_decoder else 1),
        "num_attention_heads": int(getattr(model.config, "num_attention_heads", 0) or 0),
        "num_kv_heads": int(kv_heads),
        "head_dim": int(head_dim),
        "eos_token_ids": _eos_ids(gc.eos_token_id),
        "pad_token_id": gc.pad_token_id if gc.pad_token_id is None else int(gc.pad_token_id),
        "model_settings": {
            "min_length": int(gc.min_length or 0),
            "forced_bos_token_id": None if gc.forced_bos_token_id is None else int(gc.forced_bos_token_id),
            "forced_eos_token_id": _eos_ids(gc.forced_eos_token_id),
        },
        "defaults": defaults,
        "max_new_tokens_limit": int(max_new_tokens_limit),
        "return_full_text": model_config.get("return_full_text"),
        # MLflow's text-generation option: runs of whitespace in the text become one space.
        "collapse_whitespace": bool(model_config.get("collapse_whitespace", False)),
    }
    if encoder_decoder:
        start = gc.decoder_start_token_id
        if start is None:
            start = model.config.decoder_start_token_id
        if start is None:
            raise ExportError("the encoder-decoder has no decoder_start_token_id")
        generation.update(encoder_file=ENCODER_FILE, decoder_start_token_id=int(start), prefix=prefix)
    return generation, template


QUANTIZATIONS = ("int8",)

# The int8 quality gate against the fp32 ONNX graph, per task; override with `quality_thresholds`.
# min_cosine: feature-extraction, lowest cosine similarity of mean-pooled embeddings over the texts;
# label_agreement: text-classification (argmax of the logits per text) and token-classification
# (per real, non-padding token), the fraction of labels int8 and fp32 agree on.
# Measured on all-MiniLM-L6-v2 (per-channel QInt8, 59 texts): mean cosine 0.989, min 0.963 (on
# one-word texts like "ok"); a min of 0.99 would refuse every int8 MiniLM, so the defaults gate
# the typical text (mean) and the worst one separately.
DEFAULT_QUALITY_THRESHOLDS = {"min_cosine": 0.95, "mean_cosine": 0.98, "label_agreement": 0.99}
GATE_METRICS = {
    "feature-extraction": ("min_cosine", "mean_cosine"),
    "text-classification": ("label_agreement",),
    "token-classification": ("label_agreement",),
}


def quality_thresholds_for(quantize: str | None, overrides: dict[str, float] | None) -> dict[str, float]:
    """The gate's thresholds: the defaults, updated with `overrides` (validated)."""
    if quantize is None:
        if overrides:
            raise ExportError("quality_thresholds only apply to a quantized export (quantize='int8')")
        return {}
    if quantize not in QUANTIZATIONS:
        raise ExportError(f"quantize={quantize!r} is not supported; supported: {list(QUANTIZATIONS)}")
    unknown = set(overrides or {}) - set(DEFAULT_QUALITY_THRESHOLDS)
    if unknown:
        raise ExportError(
            f"unknown quality threshold(s) {sorted(unknown)}; known: {sorted(DEFAULT_QUALITY_THRESHOLDS)}"
        )
    return {**DEFAULT_QUALITY_THRESHOLDS, **{k: float(v) for k, v in (overrides or {}).items()}}


def quantize_int8(fp32_path: Path, out_path: Path) -> None:
    """Dynamic int8 quantization with ONNX Runtime: per-channel signed int8 weights (uint8
    activations quantized at run time, the U8S8 kernels ORT recommends for CPU). MatMul and Gather
    (embeddings) are quantized; the graph is otherwise left as exported (ORT fuses at load time)."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    external = any(f.name != fp32_path.name for f in fp32_path.parent.iterdir())
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs advice at WARNING through the root logger
    try:
        quantize_dynamic(
            fp32_path,
            out_path,
            per_channel=True,
            reduce_range=False,
            weight_type=QuantType.QInt8,
            use_external_data_format=external,
        )
    finally:
        root.setLevel(level)


def _run_batches(session: Any, batches: list[dict[str, np.ndarray]], output: str) -> list[np.ndarray]:
    names = [i.name for i in session.get_inputs()]
    outs = []
    for enc in batches:
        feeds = {n: enc[n] if n in enc else np.zeros_like(enc["input_ids"]) for n in names}
        outs.append(session.run([output], feeds)[0])
    return outs


def check_quantized(
    fp32_path: Path,
    int8_path: Path,
    tokenizer: Any,
    max_length: int,
    task: str,
    output: str,
    texts: list[str],
    thresholds: dict[str, float],
    batch_size: int = 16,
) -> dict[str, float]:
    """Run the fp32 and int8 graphs on `texts`; fail when the task's quality metric is past its
    threshold. Returns the metrics (names start with `int8_`)."""
    import onnxruntime as ort

    # Similar lengths batched together, so one long text does not pad every batch.
    order = sorted(texts, key=lambda t: len(tokenizer(t, truncation=True, max_length=max_length)["input_ids"]))
    batches = []
    for i in range(0, len(order), batch_size):
        enc = tokenizer(
            order[i : i + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="np"
        )
        batches.append({k: np.asarray(v, dtype=np.int64) for k, v in enc.items()})
    results = []
    for path in (fp32_path, int8_path):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        results.append(_run_batches(session, batches, output))
        del session
    masks = [b["attention_mask"].astype(bool) for b in batches]

    metrics: dict[str, float] = {}
    if task == "feature-extraction":
        cosines = []
        for ref, got, mask in zip(*results, masks, strict=True):
            weights = mask[..., None].astype(np.float64)
            a = (ref * weights).sum(1) / weights.sum(1)
            b = (got * weights).sum(1) / weights.sum(1)
            cosines.append((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12))
        cos = np.concatenate(cosines)
        metrics = {"int8_min_cosine": float(cos.min()), "int8_mean_cosine": float(cos.mean())}
    else:
        agree, total = 0, 0
        for ref, got, mask in zip(*results, masks, strict=True):
            same = ref.argmax(-1) == got.argmax(-1)
            if same.ndim == 2:  # token labels: real tokens only
                same = same[mask]
            agree += int(same.sum())
            total += same.size
        metrics = {"int8_label_agreement": agree / total, "int8_label_count": float(total)}
    what = {
        "min_cosine": "lowest cosine similarity of mean-pooled embeddings",
        "mean_cosine": "mean cosine similarity of mean-pooled embeddings",
        "label_agreement": "label agreement",
    }
    for gate in GATE_METRICS[task]:
        value, threshold = metrics[f"int8_{gate}"], thresholds[gate]
        metrics[f"int8_{gate}_threshold"] = threshold
        if not value >= threshold:
            raise ExportError(
                f"int8 quality gate failed: {gate} = {value:.5f} < threshold {threshold} ({what[gate]} between "
                f"the int8 and fp32 ONNX graphs over {len(texts)} sample texts); refusing to export. "
                f"Export without quantization, or accept the loss with a lower {gate} quality threshold"
            )
    return metrics


def signature_for(task: str, max_length: int, defaults: dict[str, Any]) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec

    specs = []
    for pname, (validate, default) in params_mod.accepted(task).items():
        value = validate(pname, defaults[pname]) if pname in defaults else default
        kind = params_mod.kind_of(validate)
        if pname == "early_stopping":  # true, false or "never": a string in the signature
            specs.append(ParamSpec(pname, "string", str(value).lower()))
        elif pname == "max_length":
            specs.append(ParamSpec(pname, "long", value or max_length))
        elif kind == "string_list":
            # MLflow cannot say None for a list: [] stands for it (the validators read [] as none).
            specs.append(ParamSpec(pname, "string", list(value or []), shape=(-1,)))
        else:
            specs.append(ParamSpec(pname, kind, value))
    # No input schema: MLflow's enforcement would turn a list of strings into an empty DataFrame;
    # records are validated by splitserve itself, with messages naming the record and field.
    return ModelSignature(inputs=None, params=ParamSchema(specs))


def _signature_defaults(config: ServingConfig) -> dict[str, Any]:
    """The defaults the bundle's MLflow signature shows (MLflow passes them to the pyfunc):
    for text-generation, the generation params as a request without any resolves them."""
    if config.generation is None:
        return config.defaults
    resolved = params_mod.resolve_for(config, {})
    names = [n for n in (*params_mod.GENERATION_DEFAULTS, "return_full_text") if n in resolved]
    return {name: resolved[name] for name in names} | config.defaults


def code_paths() -> list[str]:
    """The packages the pyfunc needs, logged with the bundle so it loads where splitserve is not installed."""
    import model_svc
    import postprocess_svc
    import preprocess_svc
    import protos
    import splitserve

    return [str(Path(str(m.__file__)).parent) for m in (splitserve, protos, preprocess_svc, postprocess_svc, model_svc)]


def bundle_requirements() -> list[str]:
    from importlib.metadata import version

    names = (
        "onnxruntime",
        "transformers",
        "tokenizers",
        "numpy",
        "pandas",
        "grpcio",
        "protobuf",
        "pydantic-settings",
        "prometheus-client",
        "mlflow",
    )
    return [f"{n}=={version(n)}" for n in names]


def export_bundle(
    source_uri: str,
    name: str | None = None,
    register: str | None = None,
    tolerance: float = 1e-4,
    defaults: dict[str, Any] | None = None,
    show_progress: bool = True,
    quantize: str | None = None,
    quality_thresholds: dict[str, float] | None = None,
    max_new_tokens_limit: int = DEFAULT_MAX_NEW_TOKENS_LIMIT,
) -> str:
    """Export the source model at `source_uri` and log the serving bundle; returns its URI.

    `quantize="int8"` replaces the bundle's ONNX graph with a dynamically quantized one, after the
    fp32 graph passed the PyTorch parity check, and only if the int8 graph keeps the quality of the
    fp32 one on sample texts (`quality_thresholds` overrides `DEFAULT_QUALITY_THRESHOLDS`).
    `max_new_tokens_limit`: text-generation only, the most new tokens a request may ask for.
    """
    import mlflow
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from splitserve.mlflow_env import registered_uri

    defaults = dict(defaults or {})
    thresholds = quality_thresholds_for(quantize, quality_thresholds)
    console = Console(stderr=True)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        disable=not show_progress,
    )
    with progress, tempfile.TemporaryDirectory(prefix="splitserve-export-") as tmp:

        def step(text: str) -> Any:
            return progress.add_task(text, total=1)

        def done(task_id: Any, text: str) -> None:
            progress.update(task_id, completed=1, description=f"[green]✓[/] {text}")

        t = step(f"Loading source model {source_uri}")
        components = mlflow.transformers.load_model(source_uri, return_type="components")
        pipeline_task = components["task"]  # translation: "translation_en_to_fr" and the like
        task = "translation" if pipeline_task.startswith("translation") else pipeline_task
        if task not in TASK_OUTPUTS:
            raise ExportError(f"task {task!r} is not supported yet; supported: {sorted(TASK_OUTPUTS)}")
        params_mod.validate_defaults(task, defaults)
        if task in GENERATION_TASKS and (defaults.get("max_new_tokens") or 0) > max_new_tokens_limit:
            raise ExportError(
                f"default max_new_tokens={defaults['max_new_tokens']} exceeds max_new_tokens_limit={max_new_tokens_limit}"
            )
        if quantize and task not in GATE_METRICS:
            raise ExportError(
                f"--quantize {quantize} has no quality gate for task {task!r} yet "
                f"(gated tasks: {sorted(GATE_METRICS)}); export it without quantization"
            )
        model, tokenizer = components["model"].float().eval(), components["tokenizer"]
        done(t, f"Loaded {type(model).__name__} ({task})")

        artifacts = Path(tmp) / "artifacts"
        onnx_dir, tok_dir = artifacts / "onnx", artifacts / "tokenizer"
        t = step("Exporting to ONNX with Optimum")
        optimum_task, outputs = TASK_OUTPUTS[task]
        output = outputs[0]  # the main output (what the int8 quality gate compares)
        raw_dir = Path(tmp) / "optimum"
        graphs = _export_onnx(model, raw_dir, optimum_task)
        onnx_dir.mkdir(parents=True)
        for f in raw_dir.iterdir():
            if f.name.split(".onnx")[0] + ".onnx" in graphs and (
                f.suffix == ".onnx" or ".onnx_data" in f.name or ".onnx.data" in f.name
            ):
                shutil.copy2(f, onnx_dir / f.name)
        tokenizer.save_pretrained(str(tok_dir))
        done(t, "Exported ONNX graph")

        t = step("Checking ONNX against PyTorch")
        max_length = max_length_of(tokenizer, model.config)
        generation, template = None, None
        if task in GENERATION_TASKS:
            generation, template = generation_info(
                model, tokenizer, onnx_dir, source_uri, max_new_tokens_limit, pipeline_task
            )
            if task == "text-generation":
                parity = check_generation_parity(
                    model, onnx_dir / "model.onnx", tokenizer, max_length, SAMPLE_TEXTS, tolerance
                )
            else:
                start_id = generation["decoder_start_token_id"]
                parity = check_seq2seq_parity(model, onnx_dir, tokenizer, max_length, SAMPLE_TEXTS, tolerance, start_id)
        else:
            parity = check_parity(
                model, onnx_dir / "model.onnx", tokenizer, max_length, SAMPLE_TEXTS, outputs, tolerance
            )
        done(t, f"ONNX matches PyTorch (max abs diff {parity['parity_max_abs_diff']:.2e})")

        if quantize == "int8":
            t = step("Quantizing to int8 (dynamic, per-channel weights) and checking it against fp32")
            int8_dir = Path(tmp) / "int8"
            int8_dir.mkdir()
            quantize_int8(onnx_dir / "model.onnx", int8_dir / "model.onnx")
            quality = check_quantized(
                onnx_dir / "model.onnx",
                int8_dir / "model.onnx",
                tokenizer,
                max_length,
                task,
                output,
                SAMPLE_TEXTS + QUALITY_TEXTS,
                thresholds,
            )
            shutil.rmtree(onnx_dir)
            shutil.copytree(int8_dir, onnx_dir)
            parity.update(quality)
            gates = ", ".join(f"{g} {quality[f'int8_{g}']:.4f} >= {thresholds[g]:g}" for g in GATE_METRICS[task])
            done(t, f"Quantized to int8 ({gates})")

        onnx_file = MERGED_DECODER_FILE if task in params_mod.ENCODER_DECODER_TASKS else "model.onnx"
        if generation:  # the model tier takes the prompts and returns the generated ids
            model_inputs, model_outputs = ["input_ids", "attention_mask"], ["generated_ids"]
        else:
            import onnxruntime as ort

            session = ort.InferenceSession(str(onnx_dir / onnx_file), providers=["CPUExecutionProvider"])
            model_inputs, model_outputs = [i.name for i in session.get_inputs()], list(outputs)
        config = ServingConfig(
            name=bundle_name(source_uri, name, register),
            task=task,
            source_model_uri=source_uri,
            model_inputs=model_inputs,
            model_outputs=model_outputs,
            max_length=max_length,
            id2label={int(k): v for k, v in model.config.id2label.items()} if task in LABEL_TASKS else None,
            problem_type=getattr(model.config, "problem_type", None),
            defaults=defaults,
            quantization=quantize,
            parity=parity,
            artifacts={"tokenizer": hash_tree(tok_dir), "onnx": hash_tree(onnx_dir)},
            generation=generation,
            prompt_template=template,
            onnx_file=onnx_file,
        )
        config.fingerprint = config.compute_fingerprint()
        (artifacts / CONFIG_FILE).write_text(config.to_json())

        t = step("Logging the serving bundle to MLflow")
        with mlflow.start_run(run_name=f"export-{config.name}"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*input example.*")
            mlflow.log_params(
                {
                    "source_model_uri": source_uri,
                    "task": task,
                    "fingerprint": config.fingerprint,
                    "max_length": max_length,
                    "quantization": quantize or "none",
                }
            )
            mlflow.log_metrics(parity)
            info = mlflow.pyfunc.log_model(
                name="bundle",
                python_model=str(Path(__file__).with_name("pyfunc_model.py")),
                artifacts={
                    "serving.json": str(artifacts / CONFIG_FILE),
                    "tokenizer": str(tok_dir),
                    "onnx": str(onnx_dir),
                },
                code_paths=code_paths(),
                signature=signature_for(task, max_length, _signature_defaults(config)),
                pip_requirements=bundle_requirements(),
                registered_model_name=register,
                tags={"splitserve.fingerprint": config.fingerprint, "splitserve.task": task},
            )
        uri = registered_uri(info, register)
        done(t, f"Logged serving bundle {uri} (fingerprint {config.fingerprint})")
    return uri


def _export_onnx(model: Any, out_dir: Path, optimum_task: str) -> list[str]:
    """Optimum's export; returns the graph files the bundle keeps (encoder-decoders: the encoder
    and the merged decoder, not the separate decoders with and without past)."""
    import logging
    import warnings

    from optimum.exporters.onnx import onnx_export_from_model

    logging.getLogger("optimum").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_export_from_model(model, out_dir, task=optimum_task, do_validation=False)
    wanted = [ENCODER_FILE, MERGED_DECODER_FILE] if optimum_task.startswith("text2text") else ["model.onnx"]
    missing = [f for f in wanted if not (out_dir / f).exists()]
    if missing:
        raise ExportError(f"Optimum wrote no {missing} (got {sorted(p.name for p in out_dir.iterdir())})")
    return wanted
