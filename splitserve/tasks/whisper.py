"""Whisper's side of automatic-speech-recognition that its generate decides: the decoder prompt
of a request (`language`, `task`, timestamps), the seconds per timestamp token, and the rows on
which generate would decode a window again (refused)."""

from __future__ import annotations

from typing import Any

from splitserve.core import generation as G
from splitserve.core.errors import InvalidInput
from splitserve.tasks.base import Assets


def decoder_prompt(info: G.GenerationInfo, asked: dict[str, Any]) -> list[int]:
    """Whisper's decoder prompt for a request (its generate's `_retrieve_init_tokens`): the start
    token, then a multilingual model's language and task tokens (the request's, else the model's),
    then <|notimestamps|> unless timestamps are asked for (`asked`: the resolved params)."""
    timestamps = bool(asked["return_timestamps"])
    prompt = list(info.decoder_prompt_ids)
    no_timestamps = info.model_settings.no_timestamps_token_id
    if prompt and prompt[-1] == no_timestamps:
        prompt = prompt[:-1]
    if asked["language"] is not None or asked["task"] is not None:
        if not info.languages or len(prompt) != 3:
            raise InvalidInput(
                "params 'language' and 'task' are not used by this bundle's model (English-only, or exported by an "
                "earlier splitserve: export it again)"
            )
        if asked["language"] is not None:
            prompt[1] = _language_id(info, asked["language"])
        if asked["task"] is not None:
            if asked["task"] not in info.tasks:
                raise InvalidInput(f"param 'task': expected one of {sorted(info.tasks)}, got {asked['task']!r}")
            prompt[2] = info.tasks[asked["task"]]
    if timestamps and no_timestamps is None:
        raise InvalidInput("param 'return_timestamps': this model has no timestamp tokens")
    return prompt if timestamps or no_timestamps is None else [*prompt, no_timestamps]


def _language_id(info: G.GenerationInfo, language: str) -> int:
    """A language as Whisper's generate takes it: "<|fr|>", "french" or "fr"."""
    from transformers.models.whisper.tokenization_whisper import TO_LANGUAGE_CODE

    name = language.lower()
    token = name if name in info.languages else None
    if token is None and name in TO_LANGUAGE_CODE:
        token = f"<|{TO_LANGUAGE_CODE[name]}|>"
    elif token is None and name in TO_LANGUAGE_CODE.values():
        token = f"<|{name}|>"
    if token not in info.languages:
        codes = sorted(t.strip("<|>") for t in info.languages)
        raise InvalidInput(f"param 'language': {language!r} is not one of this model's languages {codes}")
    return info.languages[token]


def check_one_pass(info: G.GenerationInfo, tokens: list[int], where: str) -> None:
    """Refuse a row on which Whisper's generate would decode again (its `_retrieve_segment`): new
    tokens (eos dropped) with two timestamps in a row that do not end on a single timestamp make it
    drop the unfinished segment and decode the window again from the last timestamp, which
    splitserve's loop does not do."""
    no_timestamps = info.model_settings.no_timestamps_token_id
    if no_timestamps is None:
        return
    if tokens and tokens[-1] in info.eos_token_ids:
        tokens = tokens[:-1]
    stamps = [t > no_timestamps for t in tokens]
    pairs = [i for i in range(len(stamps) - 1) if stamps[i] and stamps[i + 1]]
    if pairs and stamps[-2:] != [False, True]:
        raise InvalidInput(
            f"{where}: the model's tokens end a segment inside the window and go on; Whisper's generate would drop "
            "what follows and decode the window again from that timestamp, which is not implemented (try more "
            "max_new_tokens)"
        )


def time_precision(assets: Assets) -> float:
    """Seconds per timestamp step: the window over the encoder's positions (half its mel frames)."""
    features = assets.features
    return float(features.chunk_length) / (int(features.nb_max_frames) // 2) if features is not None else 0.02
