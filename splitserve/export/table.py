"""Export of table-question-answering (TAPAS): the encoder and its token-level heads as one graph,
checked against the PyTorch model's own `logits` on sample tables.

TapasForQuestionAnswering's forward computes its positions (reset at every cell) and its cell
selection (cell averages, one column, -10000 for the others) with segmented reductions (IndexMap,
scatter) that PyTorch's exporter turns into graphs that differ from PyTorch (by 0.02-0.08, and by
~1e4 where a different column wins). So the graph takes the positions as an input (the preprocess
stage computes them, `table_question_answering.position_ids`) and gives the heads before any
reduction: `token_logits` (the cell-selection head, over the temperature), `column_logits` (the
column head, per token) and `logits_aggregation`; the postprocess stage does the rest in numpy
(`table_question_answering.model_logits`), as the model does it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from splitserve.core.bundle import ServingConfig, hash_tree
from splitserve.core.errors import ExportError
from splitserve.export.onnx import max_length_of, output_shapes
from splitserve.export.parity import Parity
from splitserve.tasks import table_question_answering as tqa
from splitserve.tasks.base import Task

FILE = "model.onnx"
INPUTS = ["input_ids", "attention_mask", "token_type_ids", "position_ids"]
# The tables and queries the graph is checked on: a numeric column, a one-row table, accents, a
# table wider than it is long.
SAMPLES: list[tuple[dict[str, list[str]], str]] = [
    (
        {"City": ["Paris", "Berlin", "Zürich"], "Population": ["2100000", "3600000", "420000"]},
        "How many people live in Berlin?",
    ),
    ({"Item": ["apple", "pear", "plum", "fig"], "Price": ["1.5", "2", "30", "4"]}, "What is the total price?"),
    ({"Name": ["Ann"], "Age": ["41"], "Town": ["Kraków"]}, "How old is Ann?"),
    (
        {"Repository": ["Transformers", "Datasets"], "Stars": ["36542", "4512"], "Language": ["Python", "Rust"]},
        "Which repository has the most stars?",
    ),
]


def table_facts(model: Any) -> dict[str, Any]:
    """What the stages need of the model's config (serving.json's `table`)."""
    config = model.config
    labels = getattr(config, "aggregation_labels", None) or {}
    aggregate = bool(labels) and bool(getattr(config, "num_aggregation_labels", 0))
    return {
        "select_one_column": bool(config.select_one_column),
        "allow_empty_column_selection": bool(config.allow_empty_column_selection),
        "max_num_rows": int(config.max_num_rows),
        "max_num_columns": int(config.max_num_columns),
        "max_position_embeddings": int(config.max_position_embeddings),
        "reset_position_index_per_cell": bool(config.reset_position_index_per_cell),
        "aggregation_labels": {str(k): str(v) for k, v in labels.items()} if aggregate else {},
        "no_aggregation_label_index": getattr(config, "no_aggregation_label_index", None),
    }


def _check_model(model: Any, tokenizer: Any) -> None:
    if type(model).__name__ != "TapasForQuestionAnswering":
        raise ExportError(
            f"table-question-answering: only TAPAS models (TapasForQuestionAnswering) are supported, got "
            f"{type(model).__name__}; TAPEX-style sequence-to-sequence table models are not served yet"
        )
    if type(tokenizer).__name__ != "TapasTokenizer":
        raise ExportError(f"table-question-answering needs the model's TapasTokenizer, got {type(tokenizer).__name__}")
    if not model.config.select_one_column:
        raise ExportError(
            "TAPAS with select_one_column=false is not supported: transformers' TapasForQuestionAnswering itself "
            "fails on it at inference (it selects cells through the column head), so no pipeline answers it"
        )
    if len(model.config.type_vocab_sizes) != tqa.TOKEN_TYPES:
        raise ExportError(f"TAPAS with {len(model.config.type_vocab_sizes)} token types is not supported (expected 7)")


def _heads(model: Any) -> Any:
    """The module exported: TAPAS's encoder and its token-level heads, positions given."""
    import torch

    from model_svc.backends.torch import tapas_heads

    class Heads(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any, position_ids: Any) -> Any:
            heads = tapas_heads(self.model, input_ids, attention_mask, token_type_ids, position_ids)
            return tuple(heads[name] for name in tqa.OUTPUTS)

    return Heads().eval()


def export_heads(model: Any, onnx_dir: Path) -> str:
    """The graph of `_heads(model)` in `onnx_dir` (from the graph cache when exported before)."""
    import torch

    from splitserve.export.onnx import cache
    from splitserve.export.onnx.graph import export_module, what_model

    def export() -> str:
        vocab = int(model.config.vocab_size)
        ids = torch.randint(min(5, vocab - 1), vocab, (2, 11))
        mask = torch.ones(2, 11, dtype=torch.long)
        mask[1, 7:] = 0
        types = torch.zeros(2, 11, tqa.TOKEN_TYPES, dtype=torch.long)
        types[:, 3:, 0], types[:, 3:, 1], types[:, 5:, 2] = 1, 1, 1
        positions = torch.arange(11)[None].repeat(2, 1)
        batch, length = torch.export.Dim("batch", min=1), torch.export.Dim("sequence", min=1)
        dynamic = tuple({0: batch, 1: length} for _ in INPUTS)
        args = (ids, mask, types, positions)
        export_module(
            _heads(model), args, onnx_dir / FILE, INPUTS, list(tqa.OUTPUTS), dynamic, what_model(model, "encoder")
        )
        return FILE

    return cache.exported(model, "table", tqa.OUTPUTS, onnx_dir, export)


def check_table_parity(
    model: Any, tokenizer: Any, path: Path, facts: dict[str, Any], tolerance: float
) -> dict[str, float]:
    """The graph and the numpy cell selection against the PyTorch model's `logits` (its own positions
    and reductions), each sample alone as the pipeline runs it: the same cells kept (above -5000,
    the others are -10000 + x) and their logits within the tolerance; the aggregation logits too."""
    import onnxruntime as ort
    import pandas as pd
    import torch

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    parity = Parity(tolerance)
    for table, query in SAMPLES:
        enc = tokenizer(table=pd.DataFrame(table), queries=query, truncation="drop_rows_to_fit", return_tensors="np")
        types = enc["token_type_ids"].astype(np.int64)
        feeds = {
            "input_ids": enc["input_ids"].astype(np.int64),
            "attention_mask": enc["attention_mask"].astype(np.int64),
            "token_type_ids": types,
            "position_ids": tqa.position_ids(types[0], facts)[None],
        }
        with torch.inference_mode():
            expected = model(**{k: torch.from_numpy(v) for k, v in feeds.items() if k != "position_ids"})
        tokens, columns, aggregation = session.run(list(tqa.OUTPUTS), feeds)
        got = tqa.model_logits(tokens[0], columns[0], types[0], facts)
        want = expected.logits[0].float().numpy()
        kept, kept_here = want > LIVE, got > LIVE
        if not np.array_equal(kept, kept_here):
            raise ExportError(
                f"ONNX selects other cells than PyTorch on the sample table {list(table)} ({query!r}); refusing to export"
            )
        parity.compare(want[kept], got[kept], "ONNX cell logits")
        if expected.logits_aggregation is not None:
            parity.compare(expected.logits_aggregation.float().numpy(), aggregation, "ONNX output 'logits_aggregation'")
    return parity.metrics()


LIVE = -5000.0  # logits below this are TAPAS's -10000 + x: cells outside the selected column


def export_table(
    loaded: Any,
    task: Task,
    source_uri: str,
    tmp: Path,
    name: str,
    defaults: dict[str, Any],
    tolerance: float,
    register: str | None,
    step: Callable[[str], Any],
    done: Callable[[Any, str], None],
) -> str:
    """The table-question-answering bundle of the loaded source, logged; returns its URI."""
    from splitserve.export import log_serving_bundle

    model, tokenizer = loaded.exported, loaded.tokenizer
    _check_model(model, tokenizer)
    artifacts = tmp / "artifacts"
    onnx_dir, tok_dir = artifacts / "onnx", artifacts / "tokenizer"
    t = step("Exporting to ONNX (TAPAS's encoder and token-level heads)")
    onnx_file = export_heads(model, onnx_dir)
    tokenizer.save_pretrained(str(tok_dir))
    done(t, "Exported ONNX graph")
    t = step("Checking ONNX against PyTorch on sample tables")
    facts = table_facts(model)
    parity = check_table_parity(loaded.reference, tokenizer, onnx_dir / onnx_file, facts, tolerance)
    max_length, length_from = max_length_of(tokenizer, model.config)
    done(
        t,
        f"ONNX matches PyTorch (max abs diff {parity['parity_max_abs_diff']:.2e}, {parity['parity_max_scaled_diff']:.1e} of its scale); max length {max_length} from {length_from}",
    )
    config = ServingConfig(
        name=name,
        task=task.name,
        source_model_uri=source_uri,
        model_inputs=list(INPUTS),
        model_outputs=list(tqa.OUTPUTS),
        max_length=max_length,
        output_shapes=output_shapes(onnx_dir / onnx_file, list(tqa.OUTPUTS)),
        source_dtype=loaded.dtype,
        defaults=defaults,
        parity=parity,
        artifacts={"tokenizer": hash_tree(tok_dir), "onnx": hash_tree(onnx_dir)},
        onnx_file=onnx_file,
        input_shapes={"token_type_ids": [-1, -1, tqa.TOKEN_TYPES]},
        input_ranges={
            "token_type_ids": [int(n) for n in model.config.type_vocab_sizes],
            "position_ids": [int(model.config.max_position_embeddings)],
        },
        vocab_size=int(model.config.vocab_size),
        table=facts,
    )
    return log_serving_bundle(task, config, artifacts, register, step, done)
