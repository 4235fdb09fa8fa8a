"""A tiny TAPAS for table-question-answering: random weights, WTQ-like heads (cell selection in one
column, an aggregation head of NONE/SUM/AVERAGE/COUNT with the answer as supervision) and the
TapasTokenizer built offline from the WordPiece vocabulary of the bundled all-MiniLM-L6-v2."""

from __future__ import annotations

import os
from pathlib import Path

import transformers

from tests.support.zoo.save import save_folder, seeded
from tests.support.zoo.tokenizer import MINILM_DIR

AGGREGATORS = {0: "NONE", 1: "SUM", 2: "AVERAGE", 3: "COUNT"}
# The table and query the cell-selection bias is set on (see `tiny_tapas`).
_CALIBRATION = ({"Item": ["apple", "pear", "plum", "fig"], "Price": ["1.5", "2", "30", "4"]}, "What costs the most?")


def tapas_tokenizer():
    return transformers.TapasTokenizer(vocab_file=os.path.join(MINILM_DIR, "vocab.txt"), model_max_length=512)


def tiny_tapas(tok, seed: int = 1, **overrides):
    """A 2-layer, 32-wide TapasForQuestionAnswering. Its cell-selection bias is set so that the
    calibration table's cell logits are centred on 0: random weights otherwise select no cell at all
    (the logits share an offset of about -5), and half of a column's cells is what tests want."""
    import pandas as pd
    import torch

    settings = dict(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        max_position_embeddings=512,
        initializer_range=0.5,
        init_cell_selection_weights_to_zero=False,
        num_aggregation_labels=len(AGGREGATORS),
        aggregation_labels=AGGREGATORS,
        no_aggregation_label_index=0,
        use_answer_as_supervision=True,
        select_one_column=True,
        allow_empty_column_selection=False,
    )
    config = transformers.TapasConfig(**{**settings, **overrides})
    model = seeded(transformers.TapasForQuestionAnswering, config, seed)
    table, query = _CALIBRATION
    enc = tok(table=pd.DataFrame(table), queries=query, return_tensors="pt")
    with torch.no_grad():
        hidden = model.tapas(**enc).last_hidden_state[0]
        logits = hidden @ model.output_weights
        model.output_bias.fill_(-float(logits[enc["token_type_ids"][0, :, 0] == 1].median()))
    return model


def save_tiny_tapas(root: Path, seed: int = 1, **overrides) -> Path:
    """The tiny TAPAS and its tokenizer in a folder `transformers.pipeline` loads."""
    tok = tapas_tokenizer()
    return save_folder(tiny_tapas(tok, seed, **overrides), tok, root / "table-question-answering-tapas")
