"""The generation tasks: generated token ids -> text, as the pipelines' postprocess builds it."""

from __future__ import annotations

from typing import Any


def decode_generated(
    tokenizer: Any, prompt_ids: list[int], new_ids: list[int], prompt_text: str, return_full_text: bool
) -> dict[str, Any]:
    """The pipeline decodes prompt + new tokens (special tokens skipped, tokenization spaces
    cleaned up), cuts off as many characters as the decoded prompt has, and puts the prompt's own
    text back in front for the full text."""
    kwargs = {"skip_special_tokens": True, "clean_up_tokenization_spaces": True}
    text = tokenizer.decode(prompt_ids + new_ids, **kwargs)
    new_text = text[len(tokenizer.decode(prompt_ids, **kwargs)) :]
    return {"generated_text": prompt_text + new_text if return_full_text else new_text, "token_ids": new_ids}


def decode_seq2seq(tokenizer: Any, decoder_start_id: int, new_ids: list[int]) -> dict[str, Any]:
    """Encoder-decoders: the pipeline decodes the decoder's whole sequence (its start token
    included), special tokens skipped, tokenization spaces kept."""
    text = tokenizer.decode([decoder_start_id, *new_ids], skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return {"generated_text": text, "token_ids": new_ids}
