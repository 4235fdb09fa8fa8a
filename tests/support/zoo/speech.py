"""Tiny speech models: a Wav2Vec2 audio classifier, Whisper (with its BPE tokenizer) and a
Wav2Vec2 CTC recognizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import transformers

from tests.support.zoo.save import save_folder, seeded
from tests.support.zoo.tokenizer import _corpus, reloaded

AUDIO_LABELS = ["speech", "music", "noise"]
TIMESTAMP_SCALE = 0.65
WHISPER_SPECIALS = [
    "<|startoftranscript|>",
    "<|en|>",
    "<|fr|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|notimestamps|>",
]


def _wav2vec2_config(**fields: Any) -> Any:
    """A 2-layer, 32-wide Wav2Vec2 (a 3-convolution feature encoder, stride 80) with a large init std."""
    return transformers.Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        conv_dim=(32, 32, 32),
        conv_stride=(5, 4, 4),
        conv_kernel=(10, 8, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        initializer_range=0.5,
        **fields,
    )


def save_tiny_audio_classifier(root: Path, seed: int = 1) -> Path:
    """A 2-layer, 32-wide Wav2Vec2 audio classifier (group-norm feature encoder, 3 labels) with
    Wav2Vec2FeatureExtractor's defaults (16 kHz, normalized), and a large init std."""
    config = _wav2vec2_config(
        vocab_size=32,
        classifier_proj_size=16,
        num_labels=len(AUDIO_LABELS),
        id2label=dict(enumerate(AUDIO_LABELS)),
        label2id={v: i for i, v in enumerate(AUDIO_LABELS)},
    )
    model = seeded(transformers.Wav2Vec2ForSequenceClassification, config, seed)
    out = root / "audio-classification-wav2vec2"
    model.save_pretrained(str(out))
    transformers.Wav2Vec2FeatureExtractor().save_pretrained(str(out))
    return out


def whisper_tokenizer(root: Path):
    """A byte-level BPE trained on the test corpus, with Whisper's special tokens after the vocabulary
    and then, as in Whisper's own, its 1501 timestamp tokens (`<|0.00|>` ... `<|30.00|>`, right
    after `<|notimestamps|>`), as WhisperTokenizerFast."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train_from_iterator(
        _corpus(), vocab_size=400, min_frequency=1, special_tokens=["<|endoftext|>"], show_progress=False
    )
    bpe.add_special_tokens(WHISPER_SPECIALS)
    bpe.add_tokens([f"<|{i * 0.02:.2f}|>" for i in range(1501)])
    root.mkdir(parents=True, exist_ok=True)
    bpe.save(str(root / "tokenizer.json"))
    tok = transformers.WhisperTokenizerFast(
        tokenizer_file=str(root / "tokenizer.json"),
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=WHISPER_SPECIALS,
    )
    return reloaded(tok, root / "whisper_tok")


def save_tiny_whisper(root: Path, seed: int = 1) -> Path:
    """A 2+2-layer, 32-wide Whisper with WhisperFeatureExtractor's defaults (80 mel bins, 30 s), a
    large init std (no near-ties in greedy decoding), and a generation_config as the real
    multilingual checkpoints have it: language and task tokens, English transcription, no
    timestamps, suppressed tokens and tokens suppressed at the beginning; timestamp tokens for
    `return_timestamps`."""
    tok = whisper_tokenizer(root / "tok")
    ids = {t: tok.convert_tokens_to_ids(t) for t in ["<|endoftext|>", *WHISPER_SPECIALS]}
    eot = ids["<|endoftext|>"]
    space = tok.convert_tokens_to_ids("Ġ")
    suppress, begin = [ids["<|startoflm|>"], ids["<|startofprev|>"], ids["<|nocaptions|>"]], [space, eot]
    config = transformers.WhisperConfig(
        vocab_size=len(tok),
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        num_mel_bins=80,
        max_source_positions=1500,
        max_target_positions=448,
        init_std=0.5,
        decoder_start_token_id=ids["<|startoftranscript|>"],
        eos_token_id=eot,
        pad_token_id=eot,
        bos_token_id=eot,
        suppress_tokens=suppress,
        begin_suppress_tokens=begin,
    )
    model = seeded(transformers.WhisperForConditionalGeneration, config, seed)
    import torch

    with torch.no_grad():  # timestamp logits well below the text tokens' (tied to the output layer):
        # chosen only when their total probability wins (return_timestamps), as a trained Whisper's
        model.model.decoder.embed_tokens.weight[ids["<|notimestamps|>"] + 1 :] *= TIMESTAMP_SCALE
    gc = model.generation_config
    gc.lang_to_id = {"<|en|>": ids["<|en|>"], "<|fr|>": ids["<|fr|>"]}
    gc.task_to_id = {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}
    gc.is_multilingual, gc.language, gc.task = True, "en", "transcribe"
    gc.no_timestamps_token_id = ids["<|notimestamps|>"]
    gc.max_initial_timestamp_index = 50  # as the real checkpoints have it
    gc.suppress_tokens, gc.begin_suppress_tokens = suppress, begin
    gc._from_model_config = False  # else transformers rebuilds it from the model config, dropping the above
    out = save_folder(model, tok, root / "asr-whisper")
    transformers.WhisperFeatureExtractor().save_pretrained(str(out))
    return out


def save_tiny_ctc(root: Path, seed: int = 1) -> Path:
    """A 2-layer, 32-wide Wav2Vec2ForCTC over a character vocabulary (`|` between words, <pad> the
    CTC blank) with Wav2Vec2CTCTokenizer built from that vocabulary, and the feature extractor's
    defaults."""
    import json

    chars = ["<pad>", "<s>", "</s>", "<unk>", "|", *"abcdefghijklmnopqrstuvwxyz'"]
    root.mkdir(parents=True, exist_ok=True)
    (root / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate(chars)}))
    tok = transformers.Wav2Vec2CTCTokenizer(str(root / "vocab.json"), word_delimiter_token="|")
    config = _wav2vec2_config(
        vocab_size=len(chars),
        pad_token_id=tok.pad_token_id,
        ctc_loss_reduction="mean",
    )
    out = save_folder(seeded(transformers.Wav2Vec2ForCTC, config, seed), tok, root / "asr-ctc")
    transformers.Wav2Vec2FeatureExtractor().save_pretrained(str(out))
    return out
