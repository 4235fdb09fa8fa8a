"""Whisper's timestamps in the decoding loop, against transformers' own processor: the numpy
`WhisperTimeStampLogitsProcessor` rules, the decoder prompt on the wire, and the rows Whisper's
generate would decode twice (refused)."""

from __future__ import annotations

import numpy as np
import pytest

from model_svc.generation.processors import process
from splitserve.core.errors import InvalidInput
from splitserve.core.generation import GenerationInfo, GenerationParams, ModelDecoding
from splitserve.tasks.whisper import check_one_pass

VOCAB, NO_TIMESTAMPS, EOS, PROMPT = 70, 40, 39, [36, 37, 38]
FIRST = NO_TIMESTAMPS + 1  # <|0.00|>


def _info() -> GenerationInfo:
    settings = ModelDecoding(
        no_timestamps_token_id=NO_TIMESTAMPS, max_initial_timestamp_index=5, prompt_token_ids=[*PROMPT, 35]
    )
    return GenerationInfo(
        architecture="encoder-decoder",
        pipeline_task="automatic-speech-recognition",
        graph_inputs=[],
        graph_outputs=[],
        num_layers=1,
        num_attention_heads=1,
        num_kv_heads=1,
        head_dim=1,
        eos_token_ids=[EOS],
        pad_token_id=EOS,
        model_settings=settings,
        defaults={},
        decoder_prompt_ids=[*PROMPT, NO_TIMESTAMPS],
    )


@pytest.mark.parametrize(
    "new",
    [[], [3], [FIRST + 2], [FIRST + 2, 5], [FIRST + 2, 5, FIRST + 4], [FIRST, 5, FIRST + 4, FIRST + 4], [FIRST + 9, 7]],
)
def test_timestamp_rules_match_transformers(new: list[int]) -> None:
    import torch
    from transformers import GenerationConfig
    from transformers.generation.logits_process import WhisperTimeStampLogitsProcessor

    gc = GenerationConfig(no_timestamps_token_id=NO_TIMESTAMPS, eos_token_id=EOS, max_initial_timestamp_index=5)
    theirs = WhisperTimeStampLogitsProcessor(gc, begin_index=len(PROMPT))
    p = GenerationParams.from_oip({"timestamps": True, "decoder_prompt": "[36, 37, 38]"}, _info())
    rng = np.random.default_rng(len(new))
    for scale in (1.0, 6.0):  # text tokens winning; timestamps' total probability winning
        scores = rng.standard_normal(VOCAB).astype(np.float32)
        scores[FIRST:] = scores[FIRST:] / scale - 2.0
        seen = [*PROMPT, *new]
        expected = theirs(torch.tensor([seen]), torch.from_numpy(scores[None].copy()))[0].numpy()
        np.testing.assert_array_equal(process(scores, seen, len(PROMPT), p), expected)


def test_decoder_prompt_travels_and_is_checked() -> None:
    info = _info()
    p = GenerationParams.of({"max_new_tokens": 4, "decoder_prompt": [36, 37, 38], "timestamps": True}, [], info)
    wire = p.to_oip()
    assert wire["decoder_prompt"] == "[36, 37, 38]" and wire["timestamps"] is True
    back = GenerationParams.from_oip(wire, info)
    assert back.decoder_prompt == (36, 37, 38) and back.timestamps and back.no_timestamps_token_id == NO_TIMESTAMPS
    assert "timestamps" not in GenerationParams.of({"max_new_tokens": 4}, [], info).to_oip()
    for bad in ("[36, 99]", "[37, 38]", "[]", "x"):
        with pytest.raises(InvalidInput, match="parameter 'decoder_prompt'"):
            GenerationParams.from_oip({"decoder_prompt": bad}, info)


def test_rows_generate_would_decode_twice_are_refused() -> None:
    info = _info()
    for served in (
        [FIRST, 5, 6, EOS],
        [FIRST, 5, FIRST + 3, FIRST + 3, 6, FIRST + 8, EOS],
        [5, 6],
        [FIRST, 5, FIRST + 2],
    ):
        check_one_pass(info, served, "record 0")
    with pytest.raises(InvalidInput, match="record 1: the model's tokens end a segment inside the window"):
        check_one_pass(info, [FIRST, 5, FIRST + 3, FIRST + 3, 6, 7], "record 1")
