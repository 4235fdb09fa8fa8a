"""Tiny encoders (BERT with WordPiece, RoBERTa with the byte-level BPE) for the encoder tasks:
feature-extraction, text-classification, token-classification, fill-mask, question-answering,
zero-shot-classification."""

from __future__ import annotations

from pathlib import Path

import transformers

from tests.support.zoo.save import save_folder
from tests.support.zoo.tokenizer import BPE_MAX_LEN, MINILM_DIR, roberta_bpe_tokenizer

TASK_LABELS = {
    "text-classification": ["NEGATIVE", "NEUTRAL", "POSITIVE"],
    "token-classification": ["B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "O"],
    # An NLI head: the zero-shot pipeline reads the entailment id from label2id.
    "zero-shot-classification": ["contradiction", "neutral", "entailment"],
    # A cross-encoder (sentence-transformers' CrossEncoder): one relevance logit per (query, document).
    "cross-encoder": ["LABEL_0"],
}

_HEADS = {
    "feature-extraction": "AutoModel",
    "text-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "fill-mask": "AutoModelForMaskedLM",
    "question-answering": "AutoModelForQuestionAnswering",
    "zero-shot-classification": "AutoModelForSequenceClassification",
    "cross-encoder": "AutoModelForSequenceClassification",
}


def tiny_model(task: str, arch: str, tok, seed: int = 1):
    """A 2-layer, 32-wide BERT or RoBERTa for `task` ("cross-encoder": text-classification with one
    label), with a large init std (every task but feature-extraction and the cross-encoder, whose
    scores should spread) so the top label, token or span is not a near-tie."""
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
        initializer_range=0.2 if task in ("feature-extraction", "cross-encoder") else 0.5,
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
    return save_folder(tiny_model(task, arch, tok, seed), tok, root / f"{task}-{arch}")
