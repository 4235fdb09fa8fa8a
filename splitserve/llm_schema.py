"""MLflow's `llm/v1/completions` and `llm/v1/chat` schemas, as the bundle's pyfunc answers them.

A text-generation model logged with `mlflow.transformers.log_model(..., task="llm/v1/completions")`
(or `"llm/v1/chat"`) takes OpenAI-style requests and answers OpenAI-style responses in MLflow's
pyfunc (`mlflow.transformers._TransformersWrapper.predict` with `llm_inference_utils`). Its bundle
answers the same, field for field, from the same stages as every other bundle:

- Request: a dict or a DataFrame (what MLflow's schema enforcement makes of one) with `prompt`
  (completions) or `messages` (chat) per row; the other fields (`max_tokens`, `temperature`,
  `stop`, `n`, `stream`, and chat's `top_p`, `top_k`, ...) are taken from the first row, over the
  pyfunc's `params`, as MLflow takes them. Chat messages are rendered with the tokenizer's chat
  template and a generation prompt (`convert_messages_to_prompt`), then generated from as text; the
  source's MLflow prompt_template, if any, applies to either prompt, as in MLflow.
- Params: `max_tokens` -> max_new_tokens; `temperature` as the pipeline takes it (sampling only where
  the model's do_sample says so), and 0 -> greedy (MLflow's pyfunc raises for 0: transformers
  refuses it); `stop`: each stop string and the same with a space in front, as MLflow's stopping
  criteria take them, matched by the model tier's own stop sequences (MLflow loads a tokenizer by the
  model's name from the Hugging Face Hub for them, which a bundle never does); generation stops
  after the sequence's last token and the text keeps it, as in MLflow.
- Response, one per row: `id`, `object` ("text_completion" / "chat.completion"), `created`, `model`
  (the source's `source_model_name`), `usage` and one choice (`index` 0, `finish_reason`, `text` or
  `message` {"role": "assistant", "content"}), computed as MLflow computes them
  (`_get_token_usage`, `_get_completions_text`, `_get_finish_reason`): prompt tokens without special
  tokens, total tokens the whole generated sequence (prompt with its special tokens, new tokens with
  an end token), the text decoded from that sequence after the decoded prompt's length,
  left-stripped. `finish_reason` is "length" when those completion tokens (which count the special
  tokens the tokenizer added to the prompt, as MLflow counts them) equal max_new_tokens: the request's
  max_tokens, or else the bundle's (MLflow, without either, answers "stop" even for a reply cut at the
  model's own limit).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import numpy as np

from splitserve.core.bundle import ServingConfig
from splitserve.core.errors import InvalidInput, shown

COMPLETIONS = "llm/v1/completions"
CHAT = "llm/v1/chat"
TASKS = (COMPLETIONS, CHAT)
OBJECT = {COMPLETIONS: "text_completion", CHAT: "chat.completion"}
INPUT = {COMPLETIONS: "prompt", CHAT: "messages"}
# The request fields besides the input column, per task (MLflow's input schemas); fields whose
# values change nothing are accepted at those values only.
FIELDS = {
    COMPLETIONS: ("temperature", "max_tokens", "stop", "n", "stream"),
    CHAT: (
        "temperature",
        "max_tokens",
        "stop",
        "n",
        "stream",
        "top_p",
        "top_k",
        "frequency_penalty",
        "presence_penalty",
        "tools",
    ),
}
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "n": (1,),
    "stream": (False,),
    "frequency_penalty": (0,),
    "presence_penalty": (0,),
    "tools": ([],),
}


def _missing(value: Any) -> bool:
    """None, or NaN (what pandas makes of a missing value)."""
    return value is None or (isinstance(value, float) and np.isnan(value))


def _plain(value: Any) -> Any:
    """numpy arrays and scalars (a DataFrame's cells) as plain Python."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_request(llm_task: str, model_input: Any, params: dict[str, Any] | None) -> tuple[list[Any], dict[str, Any]]:
    """MLflow's `preprocess_llm_inference_input`: (each row's prompt or messages, the request's fields:
    the first row's, over `params`)."""
    import pandas as pd

    column = INPUT[llm_task]
    if isinstance(model_input, pd.DataFrame):
        data = {k: [_plain(v) for v in model_input[k].tolist()] for k in model_input.columns}
    elif isinstance(model_input, dict):
        data = {k: [_plain(v)] for k, v in model_input.items()}
    elif isinstance(model_input, list) and model_input and all(isinstance(r, dict) for r in model_input):
        keys = list(dict.fromkeys(k for r in model_input for k in r))
        data = {k: [_plain(r.get(k)) for r in model_input] for k in keys}
    else:
        raise InvalidInput(
            f"a model logged with task {llm_task!r} takes a dict (or a DataFrame) with field {column!r}, got "
            f"{type(model_input).__name__}"
        )
    if column not in data:
        raise InvalidInput(f"a model logged with task {llm_task!r} takes field {column!r}; got {sorted(data)}")
    inputs = data.pop(column)
    fields = {k: v[0] for k, v in data.items() if v and not _missing(v[0])}
    merged = {**(params or {}), **fields}
    unknown = sorted(set(merged) - set(FIELDS[llm_task]))
    if unknown:
        raise InvalidInput(f"unknown field(s) {unknown} for task {llm_task!r}; it takes {list(FIELDS[llm_task])}")
    return inputs, merged


def generation_params(fields: dict[str, Any]) -> dict[str, Any]:
    """The request's fields as the bundle's generation params (absent: the bundle's default)."""
    for name, neutral in _NEUTRAL.items():
        value = fields.get(name)
        if not _missing(value) and value not in neutral and not (isinstance(value, list) and not value):
            raise InvalidInput(f"field {name!r}: only {neutral[0]!r} is supported, got {shown(value)}")
    params: dict[str, Any] = {}
    if not _missing(fields.get("max_tokens")):
        params["max_new_tokens"] = fields["max_tokens"]
    temperature = fields.get("temperature")
    if not _missing(temperature):
        if isinstance(temperature, (int, float)) and not isinstance(temperature, bool) and temperature == 0:
            params["do_sample"] = False  # greedy (MLflow's pyfunc raises: transformers refuses 0)
        else:
            params["temperature"] = temperature
    for name in ("top_p", "top_k"):
        if not _missing(fields.get(name)):
            params[name] = fields[name]
    stop = fields.get("stop")
    if not _missing(stop) and stop != []:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
            raise InvalidInput(f"field 'stop': expected a string or a list of non-empty strings, got {shown(stop)}")
        # MLflow stops at each sequence with and without a space in front.
        params["stop"] = list(dict.fromkeys(s for seq in stops for s in (seq, " " + seq)))
    return params


def chat_prompt(tokenizer: Any, messages: Any, index: int) -> str:
    """MLflow's `convert_messages_to_prompt`: the chat in the tokenizer's chat template, with a
    generation prompt."""
    if not (isinstance(messages, list) and messages and all(isinstance(m, dict) for m in messages)):
        raise InvalidInput(f"row {index}: field 'messages' must be a non-empty list of {{'role', 'content'}} objects")
    try:
        return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    except Exception as exc:  # noqa: BLE001 - no chat template, or the template refuses the chat
        raise InvalidInput(f"row {index}: field 'messages': cannot apply the chat template: {exc}") from None


def prompts_of(llm_task: str, inputs: list[Any], tokenizer: Any) -> list[str]:
    """Each row's prompt text (a chat rendered)."""
    if llm_task == CHAT:
        return [chat_prompt(tokenizer, messages, i) for i, messages in enumerate(inputs)]
    for i, prompt in enumerate(inputs):
        if not isinstance(prompt, str):
            raise InvalidInput(f"row {i}: field 'prompt' must be a string, got {shown(prompt)}")
    return list(inputs)


def response(
    config: ServingConfig, tokenizer: Any, prompt: str, new_ids: list[int], max_new_tokens: int
) -> dict[str, Any]:
    """One row's answer, as MLflow's `_get_output_and_usage_from_tensor` makes it. `prompt` is the
    text generated from (the prompt_template applied), `new_ids` the generated tokens."""
    assert config.llm_task in TASKS
    sequence = list(tokenizer(prompt)["input_ids"]) + list(new_ids)  # the pipeline's generated_token_ids
    bare = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    kwargs = {"skip_special_tokens": True, "clean_up_tokenization_spaces": True}
    text = tokenizer.decode(sequence, **kwargs)[len(tokenizer.decode(bare, **kwargs)) :].lstrip()
    usage = {"prompt_tokens": len(bare), "completion_tokens": len(sequence) - len(bare), "total_tokens": len(sequence)}
    finish = "length" if usage["completion_tokens"] == max_new_tokens else "stop"
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
    if config.llm_task == COMPLETIONS:
        choice["text"] = text
    else:
        choice["message"] = {"role": "assistant", "content": text}
    return {
        "id": str(uuid.uuid4()),
        "object": OBJECT[config.llm_task],
        "created": int(time.time()),
        "model": config.llm_model_name or "",
        "usage": usage,
        "choices": [choice],
    }


def predict(pipeline: Any, model_input: Any, params: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The bundle's pyfunc answer for an llm/v1 bundle: `pipeline` is its in-process pipeline."""
    config: ServingConfig = pipeline.pre.assets.config
    assert config.llm_task is not None
    tokenizer = pipeline.pre.tokenizer
    inputs, fields = read_request(config.llm_task, model_input, params)
    asked = generation_params(fields)
    prompts = prompts_of(config.llm_task, inputs, tokenizer)
    max_new_tokens = pipeline.pre.resolve_params(asked)["max_new_tokens"]
    results = pipeline.predict([{"text": p} for p in prompts], asked or None)
    template = config.prompt_template
    return [
        response(
            config,
            tokenizer,
            template.format(prompt=p) if template else p,
            r["generated"][0]["token_ids"],
            max_new_tokens,
        )
        for p, r in zip(prompts, results, strict=True)
    ]
