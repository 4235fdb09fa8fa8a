"""table-question-answering: a query and a table -> the cells TAPAS selects and its aggregator.

The record is MLflow's input for this task: `query`, and `table` as a JSON object of columns
(`{"City": ["Paris", "Berlin"], "Population": ["2100000", "3600000"]}`, every cell a string). encode
is the pipeline's preprocess (the TapasTokenizer on the table and the query, rows dropped to fit
the model's length) plus the position ids TAPAS's embeddings would compute (reset at every cell), so
that the graph has no segmented reductions. The graph gives the token-level heads (`token_logits`,
`column_logits`, `logits_aggregation`); decode is a numpy port of what TapasForQuestionAnswering
does with them at inference (cell averages, the one column it selects, -10000 for every other cell)
followed by the pipeline's `convert_logits_to_predictions` and `postprocess`: the cells whose mean
probability passes 0.5, the aggregator, "AGGREGATOR > cell, cell".

Served: the pipeline's batch mode. Its `sequential` mode (SQA-style, each query's token types
depend on the previous answer) is refused.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from protos import splitserve_pb2 as pb
from splitserve.core import params as P
from splitserve.core.errors import InvalidInput, record_label, shown
from splitserve.core.records import Record, check_records
from splitserve.tasks.base import Assets, Batch, Encoded, ExportFacts, Task

OUTPUTS = ("token_logits", "column_logits", "logits_aggregation")
TOKEN_TYPES = 7  # segment, column, row, previous label, column rank, inverse column rank, numeric relation
LOG_ZERO = np.float32(-10000.0)  # TAPAS's CLOSE_ENOUGH_TO_LOG_ZERO
TRUNCATIONS = {True: "drop_rows_to_fit", False: "do_not_truncate"}


def truncation(name: str, value: Any) -> str:
    """ "drop_rows_to_fit" or true; "do_not_truncate" or false"""
    if isinstance(value, bool):
        return TRUNCATIONS[value]
    return P.choice(*TRUNCATIONS.values())(name, value)


def sequential(name: str, value: Any) -> bool:
    """false only (the batch mode; the pipeline's sequential mode is not served)"""
    if P.boolean(name, value):
        raise InvalidInput(
            f"param {name!r}: the pipeline's sequential mode (SQA-style, each query's token types set from the "
            "previous answer) is not served; the batch mode is (sequential=false)"
        )
    return False


def parse_table(index: int, record: Record) -> dict[str, list[str]]:
    """The record's table: a JSON object of equally long columns of strings."""
    where = f"{record_label(index, record.id)}: field 'table'"
    try:
        table = json.loads(record.table or "")
    except ValueError as exc:
        raise InvalidInput(f"{where} is not JSON ({exc}); expected an object of columns") from None
    if not isinstance(table, dict) or not all(isinstance(c, list) for c in table.values()):
        raise InvalidInput(f"{where} must be a JSON object of columns (column name -> list of cells)")
    if not table or not any(table.values()):
        raise InvalidInput(f"{where} is empty")
    lengths = {name: len(cells) for name, cells in table.items()}
    if len(set(lengths.values())) > 1:
        raise InvalidInput(f"{where} has columns of different lengths: {shown(lengths)}")
    for name, cells in table.items():
        bad = next((i for i, cell in enumerate(cells) if not isinstance(cell, str)), None)
        if bad is not None:
            raise InvalidInput(
                f"{where}: column {shown(name)} cell {bad} must be a string, got {type(cells[bad]).__name__}"
            )
    return table


def position_ids(token_types: np.ndarray, facts: dict[str, Any]) -> np.ndarray:
    """The positions TAPAS's embeddings compute, for one row's tokens ([tokens, 7] -> int64 [tokens]):
    with `reset_position_index_per_cell`, a token's index less the first index of its (column, row)
    segment, at most max_position_embeddings - 1; else the token's index."""
    index = np.arange(len(token_types), dtype=np.int64)
    if not facts["reset_position_index_per_cell"]:
        return index
    keys = token_types[:, 1] * (int(token_types[:, 2].max()) + 1) + token_types[:, 2]
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return np.minimum(int(facts["max_position_embeddings"]) - 1, index - first[inverse])


def model_logits(tokens: np.ndarray, columns: np.ndarray, token_types: np.ndarray, facts: dict[str, Any]) -> np.ndarray:
    """TapasForQuestionAnswering's `logits` at inference from its token-level heads (one record's
    real tokens): each cell's mean token logit in the column whose mean cell logit is highest,
    LOG_ZERO added everywhere else (transformers selects one column at inference whatever
    select_one_column says; export refuses a model without it, which transformers cannot run)."""
    n_cols = int(facts["max_num_columns"])
    rows = np.minimum(token_types[:, 2], int(facts["max_num_rows"]) - 1)
    cols = np.minimum(token_types[:, 1], n_cols - 1)
    cell_ids, inverse = np.unique(rows * n_cols + cols, return_inverse=True)
    count = np.bincount(inverse).astype(np.float32)
    cell_tokens = (np.bincount(inverse, weights=tokens) / count).astype(np.float32)
    cell_columns = (np.bincount(inverse, weights=columns) / count).astype(np.float32)
    column_of_cell = cell_ids % n_cols
    cells_in_column = np.bincount(column_of_cell, minlength=n_cols).astype(np.float32)
    column_logits = np.bincount(column_of_cell, weights=cell_columns, minlength=n_cols) / cells_in_column.clip(1e-10)
    column_logits = column_logits.astype(np.float32) + LOG_ZERO * ((cells_in_column < 0.5) & (np.arange(n_cols) != 0))
    if not facts["allow_empty_column_selection"]:
        column_logits[0] += LOG_ZERO
    selected = int(np.argmax(column_logits))
    kept = (column_of_cell == selected) & (column_of_cell != 0)  # column 0 (the query) is never selected
    return (cell_tokens + LOG_ZERO * ~kept)[inverse].astype(np.float32)


def answer_coordinates(logits: np.ndarray, token_types: np.ndarray, threshold: float = 0.5) -> list[tuple[int, int]]:
    """The pipeline's `convert_logits_to_predictions` for one record: (row, column) of every table
    cell whose tokens' mean probability passes `threshold`, sorted."""
    probabilities = 1 / (1 + np.exp(-np.maximum(logits, np.float32(-88.7))))
    segment, cols, rows = token_types[:, 0], token_types[:, 1] - 1, token_types[:, 2] - 1
    cell = (segment == 1) & (cols >= 0) & (rows >= 0)
    by_cell: dict[tuple[int, int], list[float]] = {}
    for p, row, col in zip(probabilities[cell], rows[cell], cols[cell], strict=True):
        by_cell.setdefault((int(row), int(col)), []).append(float(p))
    return sorted(coords for coords, ps in by_cell.items() if np.array(ps).mean() > threshold)


class TableQuestionAnswering(Task):
    name = "table-question-answering"
    params = (
        P.Param("truncation", truncation, "drop_rows_to_fit", "string"),
        P.Param("sequential", sequential, False, "boolean"),
    )
    required = ("query", "table")
    fields = ("query", "table")
    result_kind = "table_answer"
    example = {
        "answer": "SUM > 36542, 4512",
        "coordinates": [[0, 1], [1, 1]],
        "cells": ["36542", "4512"],
        "aggregator": "SUM",
    }
    export = ExportFacts(OUTPUTS, parity="table")

    def check(self, assets: Assets, records: list[Record], p: dict[str, Any]) -> None:
        check_records(records, assets.limits, self.required, self.fields)
        for i, record in enumerate(records):
            parse_table(i, record)

    def encode(self, assets: Assets, records: list[Record], p: dict[str, Any]) -> Encoded:
        """One row per record: the tokenizer's ids and 7 token types, and the positions, right-padded with zeros."""
        import pandas as pd

        facts, max_length = assets.config.table or {}, assets.config.max_length
        rows = []
        for i, record in enumerate(records):
            frame = pd.DataFrame(parse_table(i, record))
            cut = p["truncation"] == TRUNCATIONS[True]
            try:
                enc = assets.tokenizer(
                    table=frame,
                    queries=record.query,
                    truncation=p["truncation"],
                    max_length=max_length if cut else None,
                )
            except ValueError as exc:  # the query and the header alone are too long
                raise InvalidInput(f"{record_label(i, record.id)}: fields 'query' and 'table': {exc}") from None
            ids = np.asarray(enc["input_ids"], dtype=np.int64)
            if len(ids) > max_length:
                raise InvalidInput(
                    f"{record_label(i, record.id)}: field 'table' is {len(ids)} tokens long with the query; the model "
                    f"takes at most {max_length} (set param truncation=drop_rows_to_fit)"
                )
            types = np.asarray(enc["token_type_ids"], dtype=np.int64).reshape(len(ids), TOKEN_TYPES)
            if not types[:, 1:3].any():
                raise InvalidInput(
                    f"{record_label(i, record.id)}: field 'table' keeps no cell within the model's {max_length} tokens"
                )
            rows.append((ids, types, position_ids(types, facts)))
        width = max(len(ids) for ids, _, _ in rows)
        n = len(rows)
        inputs = {
            "input_ids": np.zeros((n, width), np.int64),
            "attention_mask": np.zeros((n, width), np.int64),
            "token_type_ids": np.zeros((n, width, TOKEN_TYPES), np.int64),
            "position_ids": np.zeros((n, width), np.int64),
        }
        for r, (ids, types, positions) in enumerate(rows):
            inputs["input_ids"][r, : len(ids)] = ids
            inputs["attention_mask"][r, : len(ids)] = 1
            inputs["token_type_ids"][r, : len(ids)] = types
            inputs["position_ids"][r, : len(ids)] = positions
        context = {"attention_mask": inputs["attention_mask"], "token_type_ids": inputs["token_type_ids"][:, :, :3]}
        return Encoded(model_inputs={k: inputs[k] for k in assets.config.model_inputs}, context=context)

    def decode(self, assets: Assets, batch: Batch, p: dict[str, Any]) -> list[dict[str, Any]]:
        facts = assets.config.table or {}
        tokens, columns = batch.output("token_logits"), batch.output("column_logits")
        aggregation = batch.output("logits_aggregation") if facts.get("aggregation_labels") else None
        mask, types = batch.ctx("attention_mask"), batch.ctx("token_type_ids")
        results = []
        for i, record in enumerate(batch.records):
            # Real tokens only (the pipeline runs each query unpadded); a batching model tier may
            # return the logits padded to a longer batch: cut them to this request's length.
            keep = mask[i].astype(bool)
            n = len(keep)
            logits = model_logits(tokens[i][:n][keep], columns[i][:n][keep], types[i][keep], facts)
            coordinates = answer_coordinates(logits, types[i][keep])
            table = parse_table(i, record)
            names = list(table)
            cells = [table[names[col]][row] for row, col in coordinates]
            answer: dict[str, Any] = {"answer": ", ".join(cells), "coordinates": [list(c) for c in coordinates]}
            answer["cells"] = cells
            if aggregation is not None:
                index = int(np.argmax(aggregation[i]))
                answer["aggregator"] = facts["aggregation_labels"][str(index)]
                if index != facts["no_aggregation_label_index"]:
                    answer["answer"] = f"{answer['aggregator']} > {answer['answer']}"
            results.append({"table_answer": answer})
        return results

    def as_mlflow_serves(self, value: Any, config: Any = None) -> Any:
        """MLflow's pyfunc answers the answer string alone, stripped (`_sanitize_output`)."""
        return value["answer"].strip()

    def to_pb(self, value: Any) -> pb.TableAnswer:
        message = pb.TableAnswer(
            answer=value["answer"],
            coordinates=[pb.CellCoordinate(row=r, column=c) for r, c in value["coordinates"]],
            cells=value["cells"],
        )
        if "aggregator" in value:
            message.aggregator = value["aggregator"]
        return message

    def from_pb(self, message: pb.TableAnswer) -> dict[str, Any]:
        value: dict[str, Any] = {
            "answer": message.answer,
            "coordinates": [[c.row, c.column] for c in message.coordinates],
            "cells": list(message.cells),
        }
        if message.HasField("aggregator"):
            value["aggregator"] = message.aggregator
        return value


TASK = TableQuestionAnswering()
