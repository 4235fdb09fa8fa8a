"""The ONNX export itself (Optimum), and the model facts read off it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from splitserve.core.errors import ExportError
from splitserve.tasks.base import Task

# Model types whose position ids start after the padding index (RoBERTa family).
PADDING_OFFSET_TYPES = {"roberta", "xlm-roberta", "camembert", "longformer", "data2vec-text", "xlm-roberta-xl"}


# The maximum length of a model that declares none (no position embeddings, e.g. T5's relative
# positions, and a tokenizer without model_max_length), unless `export --max-length` says.
DEFAULT_MAX_LENGTH = 512


def max_length_of(tokenizer: Any, model_config: Any, requested: int | None = None) -> tuple[int, str]:
    """The longest input the stages give the model, and where that number came from: the smaller
    of the tokenizer's model_max_length and the model's position embeddings, else `requested`
    (export --max-length), else DEFAULT_MAX_LENGTH. A `requested` length past the positions is
    refused."""
    declared = []
    if 0 < getattr(tokenizer, "model_max_length", 0) < 100_000:
        declared.append(int(tokenizer.model_max_length))
    positions = getattr(model_config, "max_position_embeddings", None)
    if positions:
        if model_config.model_type in PADDING_OFFSET_TYPES:
            positions -= (model_config.pad_token_id or 0) + 1
        declared.append(int(positions))
    if requested is not None:
        if positions and requested > positions:
            raise ExportError(f"--max-length {requested} exceeds the model's {positions} position embeddings")
        return requested, "--max-length"
    if declared:
        return min(declared), "the model"
    return DEFAULT_MAX_LENGTH, f"the default ({DEFAULT_MAX_LENGTH}; the model declares none: set --max-length)"


def export_graphs(model: Any, task: Task, raw_dir: Path, onnx_dir: Path) -> str:
    """Export with Optimum into `raw_dir` and copy the graphs the bundle keeps (with their
    external data) into `onnx_dir`; returns the file the model tier runs."""
    try:
        graphs = export_onnx(model, raw_dir, task.export.optimum_task, task.export.graphs)
    except ExportError:
        raise
    except Exception as exc:  # noqa: BLE001 - Optimum's advice is for its own CLI: say what failed
        detail = str(exc).strip().splitlines()
        raise ExportError(
            f"Optimum cannot export {type(model).__name__} ({model.config.model_type}) for "
            f"{task.export.optimum_task}: {type(exc).__name__}: {detail[0] if detail else ''}"
        ) from None
    onnx_dir.mkdir(parents=True)
    for f in raw_dir.iterdir():
        if f.name.split(".onnx")[0] + ".onnx" in graphs and (
            f.suffix == ".onnx" or ".onnx_data" in f.name or ".onnx.data" in f.name
        ):
            shutil.copy2(f, onnx_dir / f.name)
    return graphs[-1]


def export_onnx(model: Any, out_dir: Path, optimum_task: str, wanted: tuple[str, ...]) -> tuple[str, ...]:
    """Optimum's export; checks it wrote the graph files the bundle keeps (`wanted`)."""
    import logging
    import warnings

    from optimum.exporters.onnx import onnx_export_from_model

    logging.getLogger("optimum").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_export_from_model(model, out_dir, task=optimum_task, do_validation=False)
    missing = [f for f in wanted if not (out_dir / f).exists()]
    if missing:
        raise ExportError(f"Optimum wrote no {missing} (got {sorted(p.name for p in out_dir.iterdir())})")
    return wanted


def graph_inputs(path: Path) -> list[str]:
    import onnxruntime as ort

    return [i.name for i in ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()]


def output_shapes(path: Path, outputs: list[str]) -> dict[str, list[int]]:
    """The graph's output shapes, -1 for its variable dimensions."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    shapes = {o.name: o.shape for o in session.get_outputs()}
    return {name: [d if isinstance(d, int) else -1 for d in shapes[name]] for name in outputs}


def encoder_states(model: Any, input_ids: Any, attention_mask: Any) -> Any:
    """An encoder-decoder's encoder hidden states in PyTorch (T5's encoder stack must be told
    use_cache=False: after an ONNX export its config says True)."""
    import inspect

    encoder = model.get_encoder()
    kwargs = {"use_cache": False} if "use_cache" in inspect.signature(encoder.forward).parameters else {}
    return encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
