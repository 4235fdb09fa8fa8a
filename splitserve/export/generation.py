"""What the stages need to generate, read off the model and its export: `GenerationInfo`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from splitserve.core.errors import ExportError
from splitserve.core.generation import GenerationInfo, ModelDecoding
from splitserve.tasks.base import Task

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
    model: Any,
    tokenizer: Any,
    onnx_dir: Path,
    max_new_tokens_limit: int,
    pipeline_task: str,
    task: Task,
    collapse_whitespace: bool = False,
) -> GenerationInfo:
    """What the stages need to generate: the decoder graph's names and past shapes, eos ids, the
    model's own decoding settings (forced tokens, min length), the defaults of the request params
    from the model's generation_config as the task's pipeline resolves them (the pipeline's own
    defaults where the model sets none), the max_new_tokens limit, the encoder-decoder's decoder
    start token and the pipeline's `prefix`. (MLflow's model_config and signature defaults are the
    bundle's defaults: `splitserve.export.source`.)"""
    import onnxruntime as ort

    encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
    gc, prefix = pipeline_generation_config(model, pipeline_task, tokenizer=tokenizer)
    if prefix and not encoder_decoder:
        raise ExportError("models with a config `prefix` are not supported for text-generation yet")
    if getattr(tokenizer, "_build_translation_inputs", None) is not None:
        raise ExportError(
            f"{type(tokenizer).__name__} takes src_lang/tgt_lang (multilingual translation); not supported yet"
        )
    graph = onnx_dir / task.export.graphs[-1]
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    graph_inputs = {i.name: i.shape for i in session.get_inputs()}
    past = sorted(n for n in graph_inputs if n.startswith("past_key_values."))
    if not past or "logits" not in {o.name for o in session.get_outputs()}:
        raise ExportError(f"the exported decoder has no past key values inputs / logits: {sorted(graph_inputs)}")
    _, kv_heads, _, head_dim = graph_inputs[past[0]]
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
    defaults = decoding_defaults(gc, max_new_tokens)
    start = None
    if encoder_decoder:
        start = gc.decoder_start_token_id
        if start is None:
            start = model.config.decoder_start_token_id
        if start is None:
            raise ExportError("the encoder-decoder has no decoder_start_token_id")
    generation = GenerationInfo(
        architecture="encoder-decoder" if encoder_decoder else "decoder",
        pipeline_task=pipeline_task,
        graph_inputs=list(graph_inputs),
        graph_outputs=[o.name for o in session.get_outputs()],
        num_layers=len([n for n in past if n.endswith(".key")]) // (2 if encoder_decoder else 1),
        num_attention_heads=int(getattr(model.config, "num_attention_heads", 0) or 0),
        num_kv_heads=int(kv_heads),
        head_dim=int(head_dim),
        eos_token_ids=_eos_ids(gc.eos_token_id),
        pad_token_id=gc.pad_token_id if gc.pad_token_id is None else int(gc.pad_token_id),
        model_settings=ModelDecoding(
            min_length=int(gc.min_length or 0),
            forced_bos_token_id=None if gc.forced_bos_token_id is None else int(gc.forced_bos_token_id),
            forced_eos_token_id=_eos_ids(gc.forced_eos_token_id),
        ),
        defaults=defaults,
        max_new_tokens_limit=int(max_new_tokens_limit),
        # MLflow's text-generation option: runs of whitespace in the text become one space.
        collapse_whitespace=collapse_whitespace,
        encoder_file=task.export.graphs[0] if encoder_decoder else None,
        decoder_start_token_id=None if start is None else int(start),
        prefix=prefix if encoder_decoder else None,
    )
    return generation


def pipeline_generation_config(model: Any, pipeline_task: str, **components: Any) -> tuple[Any, str | None]:
    """The generation config the task's pipeline runs `generate` with when a call sets nothing,
    and its input `prefix`. transformers 5: the model's generation_config, with the pipeline's own
    defaults (`_default_generation_config`: text-generation samples at temperature 0.7, ASR runs 5
    beams) for what the model does not set. The tasks transformers 5 removed (text2text-generation,
    summarization, translation) resolve as their 4.x pipelines did: the model's generation_config
    updated by the config's `task_specific_params` for the task, which may also give the prefix.
    transformers 4.x: the pipeline's `generation_config`."""
    import copy

    import transformers

    removed = getattr(transformers.pipelines, "REMOVED_TASKS", {})
    base = "translation" if pipeline_task.startswith("translation") else pipeline_task
    if base in removed:
        gc = copy.deepcopy(model.generation_config)
        prefix = getattr(model.config, "prefix", None)
        params = dict((getattr(model.config, "task_specific_params", None) or {}).get(pipeline_task) or {})
        prefix = params.pop("prefix", prefix)
        gc.update(**params)
        tokenizer = components.get("tokenizer")
        if gc.pad_token_id is None and tokenizer is not None and tokenizer.pad_token_id is not None:
            gc.pad_token_id = tokenizer.pad_token_id
        return _with_global_defaults(gc), prefix or None
    pipe = transformers.pipeline(pipeline_task, model=model, **components)  # type: ignore[call-overload]
    prefix = getattr(pipe, "prefix", None) or None
    if getattr(pipe, "generation_config", None) is not None:  # transformers 4.x
        return copy.deepcopy(pipe.generation_config), prefix
    gc = copy.deepcopy(model.generation_config)
    added = pipe._prepare_generate_kwargs({})  # the pipeline's defaults for what the model leaves unset
    gc.update(**{k: v for k, v in added.items() if k != "generation_config"})
    return _with_global_defaults(gc), prefix


def _with_global_defaults(gc: Any) -> Any:
    """transformers 5's generation settings left unset (None) take generate's global defaults
    (top_k 50, temperature 1, ...) at the call, as here."""
    defaults = getattr(type(gc), "_get_default_generation_params", None)
    if defaults is not None:
        gc.update(**defaults(), defaults_only=True)
    return gc


def decoding_defaults(gc: Any, max_new_tokens: int | None) -> dict[str, Any]:
    """The generation params' defaults from a model's generation_config (the pipeline's, unless a
    request says otherwise)."""
    return {
        "max_new_tokens": max_new_tokens,
        "do_sample": bool(gc.do_sample),
        "temperature": float(gc.temperature) if isinstance(gc.temperature, (int, float)) else 1.0,
        "top_k": int(gc.top_k) if gc.top_k else None,
        "top_p": float(gc.top_p) if gc.top_p is not None else 1.0,
        "repetition_penalty": float(gc.repetition_penalty) if gc.repetition_penalty is not None else 1.0,
        "num_beams": int(gc.num_beams or 1),
        "length_penalty": float(gc.length_penalty) if gc.length_penalty is not None else 1.0,
        "early_stopping": gc.early_stopping if gc.early_stopping in (True, False, "never") else False,
        "no_repeat_ngram_size": int(gc.no_repeat_ngram_size or 0),
        "min_new_tokens": int(gc.min_new_tokens or 0),
    }
