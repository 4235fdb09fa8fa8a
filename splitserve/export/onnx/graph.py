"""One module to ONNX with PyTorch's exporter (`torch.onnx.export(dynamo=True)`, onnxscript), the
way every graph family uses it: warnings kept out of the user's terminal, a failure said in one
line, and the graph tidied for the bundle.

Tidying: each node is renamed for the module it came from (`/encoder/layer.5/intermediate/dense/
MatMul_476`, as Optimum named them: int8's remedies find a layer's products by these names), the
exporter's per-node metadata is dropped (stack traces with the exporting machine's paths, the FX
node text: most of a small graph's bytes), and the weights are kept inside the file unless it
would pass protobuf's 2 GB limit (`<file>.data` then).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from splitserve.core.errors import ExportError

PROTOBUF_LIMIT = 1_800_000_000  # bytes of weights past which they go to an external data file
OPSET = 18


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's warnings and prints (torchvision's missing ops, axis renames, FX notes)
    are for its own developers: kept from the user's terminal."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_module(
    module: Any,
    args: tuple[Any, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    dynamic_shapes: dict[str, dict[int, Any]] | tuple[Any, ...],
    what: str,
) -> None:
    """Export `module(*args)` to `path` (inputs and outputs named; `dynamic_shapes` as
    torch.export takes them, keyed by forward's argument names) and tidy the graph. `what` names
    the model in the one-line error ("GPT2LMHeadModel (gpt2) decoder")."""
    import torch

    size = sum(p.numel() * p.element_size() for p in module.parameters())
    try:
        with _quiet(), torch.inference_mode(False), torch.no_grad():
            program = torch.onnx.export(
                module,
                args,
                input_names=input_names,
                output_names=output_names,
                dynamic_shapes=dynamic_shapes,
                opset_version=OPSET,
                dynamo=True,
                optimize=True,
                verbose=False,
            )
    except Exception as exc:  # noqa: BLE001 - the exporter's own report is pages long: one line
        raise ExportError(f"cannot export {what} to ONNX: {_reason(exc)}") from None
    assert program is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path), external_data=size > PROTOBUF_LIMIT)
    _tidy_file(path)


def what_model(model: Any, part: str) -> str:
    """How an error names the model: "GPT2LMHeadModel (gpt2) decoder"."""
    return f"{type(model).__name__} ({getattr(model.config, 'model_type', '?')}) {part}"


def _reason(exc: BaseException) -> str:
    """The first line that says what failed (an unsupported operator, a data-dependent shape)."""
    cause: BaseException | None = exc
    while cause is not None and cause.__cause__ is not None and not str(cause).strip():
        cause = cause.__cause__
    text = str(cause or exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        lowered = line.lower()
        if "unsupported" in lowered or "not supported" in lowered or "could not" in lowered or "cannot" in lowered:
            return f"{type(cause or exc).__name__}: {line[:300]}"
    return f"{type(cause or exc).__name__}: {(lines[0] if lines else '')[:300]}"


def tidy(model: Any) -> None:
    """Name each node for its module (`/encoder/layer.5/intermediate/dense/MatMul_476`) and drop
    the exporter's metadata."""
    for node in model.graph.node:
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), None)
        module = _module_path(scopes) if scopes else ""
        suffix = node.name.removeprefix("node_") or node.op_type
        node.name = f"/{module}/{suffix}" if module else f"/{suffix}"
        del node.metadata_props[:]
    del model.metadata_props[:]
    seen: dict[str, int] = {}
    for node in model.graph.node:  # names stay unique
        count = seen.get(node.name, 0)
        seen[node.name] = count + 1
        if count:
            node.name = f"{node.name}_{count}"


def _module_path(scopes: str) -> str:
    """The deepest module of a node's name scopes, as a path: ['', 'm', 'm.encoder', ...,
    'm.encoder.layer.5.output.dense', 'linear_35'] -> 'encoder/layer.5/output/dense' (the wrapper's
    own attribute, the first scope, left out)."""
    import ast

    try:
        names = [s for s in ast.literal_eval(scopes) if s]
    except (ValueError, SyntaxError):
        return ""
    modules = names[:-1] if len(names) > 1 else names  # the last is the op's own name
    if not modules:
        return ""
    parts = modules[-1].split(".")
    wrapper = modules[0].split(".")[0]
    if parts and parts[0] == wrapper and len(modules) > 1:
        parts = parts[1:]
    # Keep "layer.5" together: a numeric part joins the one before it.
    out: list[str] = []
    for part in parts:
        if part.isdigit() and out:
            out[-1] = f"{out[-1]}.{part}"
        else:
            out.append(part)
    return "/".join(out)


def _tidy_file(path: Path) -> None:
    """`tidy` the graph in `path` (its external weights, if any, stay where they are)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    tidy(model)
    onnx.save_model(model, str(path))
