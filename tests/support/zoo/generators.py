"""Tiny generative text models: decoder-only LMs (GPT-2, Llama) and encoder-decoders (T5, BART)."""

from __future__ import annotations

from pathlib import Path

import transformers

from tests.support.zoo.save import save_folder, seeded
from tests.support.zoo.tokenizer import (
    BPE_MAX_LEN,
    MINILM_DIR,
    _train_byte_level_files,
    reloaded,
    roberta_bpe_tokenizer,
)

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
    return save_folder(seeded(cls, config, seed), tok, root / f"text-generation-{arch}")


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
    return save_folder(seeded(cls, config, seed), tok, root / f"seq2seq-{arch}")
