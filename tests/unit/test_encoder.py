"""The preprocess stage's fast tokenization (`splitserve.core.encoder`): `tokenizers` called
directly answers exactly as transformers' fast tokenizer `__call__` does (ids, attention mask, token
types, offsets, special-tokens mask, overflowing windows, pairs truncated longest-first or
only-first), for every tokenizer kind the tests use (WordPiece, byte-level BPE as RoBERTa and GPT-2
wrap it, a SentencePiece-style Unigram), on texts hypothesis draws (unicode, empty, long and
truncated, pairs); and the choice falls back to transformers' call where the fast path could
differ. No models, no MLflow."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import transformers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splitserve.core.encoder import (
    FastEncoder,
    TransformersEncoder,
    fast_path_refusal,
    same_answers,
    same_batch,
    text_encoder,
)
from tests.support.zoo.generators import gpt2_bpe_tokenizer
from tests.support.zoo.tokenizer import MINILM_DIR, _corpus, reloaded, roberta_bpe_tokenizer

KINDS = ("wordpiece", "roberta-bpe", "gpt2-bpe", "unigram")


def unigram_tokenizer(root: Path) -> Any:
    """A SentencePiece-style Unigram (Metaspace pre-tokenizer) trained on the test corpus, with
    T5's `</s>` appended to every text, as a bundle's tiers load it."""
    from tokenizers import SentencePieceUnigramTokenizer
    from tokenizers.processors import TemplateProcessing

    sp = SentencePieceUnigramTokenizer()
    sp.train_from_iterator(
        _corpus(), vocab_size=300, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>", show_progress=False
    )
    backend = sp._tokenizer
    eos = backend.token_to_id("</s>")
    backend.post_processor = TemplateProcessing(
        single="$A </s>", pair="$A </s> $B:1 </s>:1", special_tokens=[("</s>", eos)]
    )
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=64
    )
    return reloaded(tok, root / "unigram")


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("encoder")
    return {
        "wordpiece": transformers.AutoTokenizer.from_pretrained(MINILM_DIR),
        "roberta-bpe": roberta_bpe_tokenizer(root / "roberta"),
        "gpt2-bpe": gpt2_bpe_tokenizer(root / "gpt2"),
        "unigram": unigram_tokenizer(root),
    }


@pytest.fixture(scope="module")
def encoders(tokenizers: dict[str, Any]) -> dict[str, FastEncoder]:
    return {kind: FastEncoder(tokenizer) for kind, tokenizer in tokenizers.items()}


FRAGMENTS = [
    "Angela", "Merkel", "visited", "Zürich", "Société Générale", "東京タワー", "北京", "😀", "❤️", "🗼", "naïve",
    "café", "—", "…", " ", "  ", "\t", "\n", "\u00a0", "\u200b", "[CLS]", "[SEP]", "[MASK]", "[PAD]", "<s>", "</s>",
    "<mask>", "<pad>", "<unk>", "don't", "12,345.6", "e\u0301", "ﬁ", "Ⅻ", "antidisestablishmentarianism",
]  # fmt: skip
# Texts: empty, arbitrary unicode, and runs of the fragments above (long enough to be truncated).
TEXTS = st.one_of(
    st.just(""),
    st.text(max_size=30),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=5)), max_size=60).map("".join),
    st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=60).map(" ".join),
)


def both(encoder: FastEncoder, tokenizer: Any, texts: list[str], pairs: list[str] | None, **options: Any) -> None:
    """The fast path's answer is transformers' (or both refuse the call)."""
    try:
        expected = TransformersEncoder(tokenizer)(texts, pairs, **options)
    except BaseException as exc:  # noqa: BLE001 (tokenizers panics: a stride too long for the window)
        with pytest.raises(type(exc)):
            encoder(texts, pairs, **options)
        return
    got = encoder(texts, pairs, **options)
    assert sorted(got) == sorted(expected)
    for name in expected:
        np.testing.assert_array_equal(got[name], np.asarray(expected[name]), err_msg=name)
        assert got[name].shape == np.asarray(expected[name]).shape, name
    assert same_batch(got, expected)
    assert [e.ids for e in got.encodings] == [e.ids for e in expected.encodings]


@pytest.mark.parametrize("kind", KINDS)
def test_every_tokenizer_kind_takes_the_fast_path(tokenizers: dict[str, Any], kind: str) -> None:
    assert fast_path_refusal(tokenizers[kind]) is None
    assert isinstance(text_encoder(tokenizers[kind]), FastEncoder)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fast_path_answers_as_transformers(
    tokenizers: dict[str, Any], encoders: dict[str, FastEncoder], kind: str, data: st.DataObject
) -> None:
    tokenizer, encoder = tokenizers[kind], encoders[kind]
    texts = data.draw(st.lists(TEXTS, min_size=1, max_size=4), label="texts")
    truncation = data.draw(st.booleans(), label="truncation")
    max_length = data.draw(st.integers(6, 40), label="max_length")
    offsets = data.draw(st.booleans(), label="offsets")
    if data.draw(st.booleans(), label="pairs"):
        pairs = data.draw(st.lists(TEXTS, min_size=len(texts), max_size=len(texts)), label="text pairs")
        strategy = data.draw(st.sampled_from(["longest_first", "only_first"]), label="strategy")  # zero-shot's
        options = {"truncation": truncation, "max_length": max_length, "offsets": offsets, "strategy": strategy}
        both(encoder, tokenizer, texts, pairs, **options)
    elif truncation and data.draw(st.booleans(), label="windows"):  # token-classification's stride
        stride = data.draw(st.integers(0, max_length - 1), label="stride")
        both(encoder, tokenizer, texts, None, truncation=True, max_length=max_length, stride=stride, overflow=True)
    else:
        both(encoder, tokenizer, texts, None, truncation=truncation, max_length=max_length, offsets=offsets)


def test_truncation_without_a_max_length_is_the_models(tokenizers: dict[str, Any]) -> None:
    tokenizer = tokenizers["unigram"]  # model_max_length 64
    long = " ".join(FRAGMENTS * 3)
    both(FastEncoder(tokenizer), tokenizer, [long, "a"], None, truncation=True, max_length=None)
    assert FastEncoder(tokenizer)([long], truncation=True, max_length=None)["input_ids"].shape == (1, 64)


def test_calls_with_other_settings_at_once_do_not_mix(tokenizers: dict[str, Any]) -> None:
    """Stage threads tokenize at once with their own truncation (each call has a backend copy of its own)."""
    tokenizer = tokenizers["wordpiece"]
    encoder = FastEncoder(tokenizer)
    texts = [" ".join(FRAGMENTS[: 5 + i % 20]) for i in range(40)]
    calls = [([t], 6 + i % 9, i % 2 == 0) for i, t in enumerate(texts)]
    expected = [TransformersEncoder(tokenizer)(t, truncation=c, max_length=m) for t, m, c in calls]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda call: encoder(call[0], truncation=call[2], max_length=call[1]), calls * 5))
    for i, answer in enumerate(got):
        np.testing.assert_array_equal(answer["input_ids"], expected[i % len(calls)]["input_ids"])


def test_tokenizers_the_fast_path_may_not_match_keep_transformers_call(tokenizers: dict[str, Any]) -> None:
    bert = tokenizers["wordpiece"]

    class Custom(type(bert)):  # type: ignore[misc]
        def _encode_plus(self, *args: Any, **kwargs: Any) -> Any:
            return super()._encode_plus(*args, **kwargs)

    custom = Custom.from_pretrained(MINILM_DIR)
    assert fast_path_refusal(custom) == "Custom overrides _encode_plus"
    assert isinstance(text_encoder(custom), TransformersEncoder)

    gpt2 = tokenizers["gpt2-bpe"]
    no_pad = transformers.AutoTokenizer.from_pretrained(gpt2.name_or_path, pad_token=None)
    assert no_pad.pad_token is None
    assert fast_path_refusal(no_pad) == "it has no padding token (transformers refuses to pad)"
    assert isinstance(text_encoder(no_pad), TransformersEncoder)
    assert text_encoder(None) is None


def test_the_load_time_check_sees_answers_that_differ(tokenizers: dict[str, Any]) -> None:
    roberta, gpt2 = tokenizers["roberta-bpe"], tokenizers["gpt2-bpe"]  # one BPE, other special tokens
    assert same_answers(FastEncoder(roberta), TransformersEncoder(roberta))
    assert not same_answers(FastEncoder(roberta), TransformersEncoder(gpt2))


def test_a_stride_the_windows_cannot_take_is_refused(tokenizers: dict[str, Any]) -> None:
    """tokenizers panics on a stride of at least the window (max_length less the special tokens)."""
    from splitserve.core.errors import InvalidInput
    from splitserve.core.records import to_records
    from splitserve.stages.preprocess import Preprocessor
    from tests.support.configs import config

    pre = Preprocessor(config("token-classification", id2label={0: "O"}), tokenizers["wordpiece"])
    assert isinstance(pre.assets.encoder, FastEncoder)  # chosen when the stage loads
    params = {"aggregation_strategy": "simple", "max_length": 16}
    assert pre.run(to_records(["Angela Merkel visited Paris"]), params | {"stride": 13}).model_inputs
    with pytest.raises(InvalidInput) as info:
        pre.run(to_records(["Angela Merkel visited Paris"]), params | {"stride": 14})
    assert str(info.value) == "param 'stride': 14 must be less than max_length less the special tokens (14)"
