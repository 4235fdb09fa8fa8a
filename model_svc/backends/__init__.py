"""Model backends: `infer(inputs) -> outputs` on numpy arrays, nothing protocol-specific;
generation bundles' backends also expose the model as a `Stepper` for the decoding loop."""

from __future__ import annotations

import logging
from typing import Any, Literal, Protocol

import numpy as np

from splitserve.core import cpu
from splitserve.core.bundle import Bundle, ServingConfig
from splitserve.core.errors import BundleError, InvalidInput, shown_list
from splitserve.core.tensors import datatype_of

log = logging.getLogger("splitserve.model")
Int8Check = Literal["refuse", "warn"]


class Backend(Protocol):
    name: str
    platform: str

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    # Generation bundles: the model as a `generation.Stepper` for the decoding loop (else None).
    stepper: Any


def check_inputs(inputs: dict[str, np.ndarray], config: ServingConfig, max_batch_size: int) -> None:
    """Refuse inputs the model cannot run, with a message naming the tensor."""
    expected = set(config.model_inputs)
    missing, unknown = sorted(expected - set(inputs)), sorted(set(inputs) - expected)
    if missing or unknown:
        raise InvalidInput(
            f"model inputs must be {sorted(expected)}; missing {missing}, unexpected {shown_list(unknown)}"
        )
    shape = None
    for name in config.model_inputs:
        array = inputs[name]
        datatype, spec = config.input_types.get(name, "INT64"), config.input_shapes.get(name, [-1, -1])
        if datatype_of(array) != datatype:
            raise InvalidInput(f"input {name!r}: datatype must be {datatype}, got {datatype_of(array)}")
        if array.ndim != len(spec) or any(s not in (-1, d) for s, d in zip(spec, array.shape, strict=True)):
            raise InvalidInput(f"input {name!r}: shape must be {spec} (-1: any), got {list(array.shape)}")
        if shape is not None and array.shape[:2] != shape:
            raise InvalidInput(
                f"input {name!r}: shape {list(array.shape)} differs from {list(shape)} of the other inputs"
            )
        shape = array.shape[:2]
        if datatype == "INT8" and not np.isin(array, (0, 1)).all():  # an audio mask
            raise InvalidInput(f"input {name!r}: a mask holds 0 and 1 only")
    assert shape is not None
    if shape[0] < 1 or shape[1] < 1:
        raise InvalidInput(f"inputs are empty: shape {list(shape)}")
    if shape[0] > max_batch_size:
        raise InvalidInput(f"batch of {shape[0]} rows exceeds max_batch_size {max_batch_size}")
    if shape[1] > config.max_length:
        raise InvalidInput(f"{shape[1]} tokens exceed the model's max length {config.max_length}")
    # Values, per request, so that one bad request fails alone rather than the batch it would join
    # (ONNX Runtime fails the whole batch on an id past the table; negative ids wrap around silently).
    _check_range(inputs, "input_ids", config.vocab_size, "token ids must be in [0, {size}), the vocabulary")
    _check_range(inputs, "token_type_ids", config.type_vocab_size, "token types must be in [0, {size})")
    _check_range(inputs, "attention_mask", 2, "mask values must be 0 or 1")
    for name, sizes in config.input_ranges.items():
        _check_range(inputs, name, sizes, "values must be in [0, {size})")


def _check_range(inputs: dict[str, np.ndarray], name: str, size: int | list[int] | None, rule: str) -> None:
    """Refuse values of input `name` outside [0, size) (only negative ones when size is unknown; a
    list: one size per column of the last dimension)."""
    array = inputs.get(name)
    if array is None:
        return
    limit = None if size is None else np.asarray(size)  # broadcast over the last dimension
    bad = array < 0 if limit is None else (array < 0) | (array >= limit)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        column = f", column {where[2]}" if len(where) > 2 else ""
        if limit is None:
            why = "values must not be negative"
        else:
            why = rule.format(size=int(limit[where[2]] if len(where) > 2 and limit.size > 1 else limit.reshape(-1)[0]))
        raise InvalidInput(
            f"input {name!r}: row {where[0]}, position {where[1]}{column} holds {int(array[where])}; {why}"
        )


def create_backend(
    bundle: Bundle,
    backend: str = "onnx",
    device: str = "cpu",
    intra_op_threads: int = 0,
    spin_wait: bool = False,
    dtype: str = "logged",
    int8_check: Int8Check = "refuse",
    idle_threads: int = 0,
) -> Backend:
    """The bundle's ONNX graph on ONNX Runtime, or the source PyTorch model (`backend="torch"`, in
    `dtype`: "logged", "fp32" or "bf16"). An int8 graph is checked against the fp32 reference its
    bundle carries (`check_int8`) before it is served. `idle_threads`: ONNX on CPU, a second session
    on that many threads for batches that run alone (`OnnxBackend.infer_alone`; 0: none)."""
    if backend == "onnx":
        from model_svc.backends.onnx import OnnxBackend

        info = bundle.config.generation
        encoder = bundle.artifact_file("onnx", info.encoder_file) if info and info.encoder_file else None
        onnx = OnnxBackend(bundle.onnx_path, bundle.config, device, intra_op_threads, spin_wait, encoder, idle_threads)
        check_int8(onnx, bundle.config, int8_check)
        return onnx
    from model_svc.backends.torch import TorchBackend

    return TorchBackend(bundle.config, device, intra_op_threads, dtype)


def check_int8(backend: Any, config: ServingConfig, on_failure: Int8Check) -> dict[str, float] | None:
    """Repeat the bundle's int8 quality gate on this CPU: the graph run on the inputs export ran,
    batched the same way, against the fp32 answers it recorded (`serving.json`'s `int8_check`).
    Past a threshold: refuse to serve (BundleError, one line naming the gate and the CPU), or with
    `on_failure="warn"` serve anyway and say so. The metrics; None for a bundle without a reference."""
    reference = config.int8_check
    if reference is None:
        return None
    feeds = reference.feeds(backend.graph_inputs)
    outputs = [backend.infer(f)[reference.output] for f, _ in feeds]
    metrics, failures = reference.check(outputs, [mask for _, mask in feeds])
    if failures:
        made = ", ".join(reference.export_cpu) or "no features recorded"
        message = (
            f"the int8 graph fails its quality gate on this CPU ({cpu.describe()}): {'; '.join(failures)}, "
            f"over the {sum(len(b) for b in reference.batches)} texts export checked it on (it passed there, on a "
            f"CPU with {made}). Serve the fp32 bundle here, or start the model tier with --int8-check warn to "
            "serve it anyway"
        )
        if on_failure == "refuse":
            raise BundleError(message)
        log.warning("%s; serving it anyway (--int8-check warn)", message)
    else:
        kept = ", ".join(f"{m} {metrics[f'int8_{m}']:.4f} >= {t:g}" for m, t in reference.thresholds.items())
        log.info("int8 graph passes its quality gate on this CPU (%s): %s", cpu.describe(), kept)
    return metrics
