"""Tiny random-weight models and tokenizers for tests: no downloads, built from configs. One module
per concern: `tokenizer` (the shared WordPiece and trained byte-level BPE), `encoders` (BERT and
RoBERTa per encoder task), `generators` (GPT-2, Llama, T5, BART), `speech` (Wav2Vec2, Whisper, CTC),
`audio` (synthesized audio and its decoding), `save` (a model folder as the pipeline loads it).
Every name is also here: `from tests.support import zoo; zoo.save_tiny_lm(...)`."""

from tests.support.zoo.audio import audio_file, decoded, synth_audio
from tests.support.zoo.encoders import TASK_LABELS, save_tiny, tiny_model
from tests.support.zoo.generators import LM_MAX_LEN, gpt2_bpe_tokenizer, save_tiny_lm, save_tiny_seq2seq
from tests.support.zoo.speech import (
    AUDIO_LABELS,
    WHISPER_SPECIALS,
    save_tiny_audio_classifier,
    save_tiny_ctc,
    save_tiny_whisper,
    whisper_tokenizer,
)
from tests.support.zoo.tokenizer import (
    BPE_MAX_LEN,
    MINILM_DIR,
    _corpus,
    _train_byte_level_files,
    reloaded,
    roberta_bpe_tokenizer,
)

__all__ = [
    "AUDIO_LABELS", "BPE_MAX_LEN", "LM_MAX_LEN", "MINILM_DIR", "TASK_LABELS", "WHISPER_SPECIALS", "_corpus",
    "_train_byte_level_files", "audio_file", "decoded", "gpt2_bpe_tokenizer", "reloaded", "roberta_bpe_tokenizer",
    "save_tiny", "save_tiny_audio_classifier", "save_tiny_ctc", "save_tiny_lm", "save_tiny_seq2seq",
    "save_tiny_whisper", "synth_audio", "tiny_model", "whisper_tokenizer",
]  # fmt: skip
