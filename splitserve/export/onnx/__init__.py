"""The ONNX export, one module per graph family (`encoder`, `decoder`, `seq2seq`, each on
`graph.export_module`: PyTorch's own exporter), and the model facts read off the model and its
graphs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from splitserve.core.errors import ExportError

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


def export_graphs(model: Any, family: str, onnx_dir: Path, outputs: tuple[str, ...] = ()) -> str:
    """Export `model` into `onnx_dir` with the module of its graph family: "encoder" (text and
    audio encoders: `outputs` named), "decoder" (decoder-only LMs with a KV cache) or "seq2seq"
    (encoder-decoders with a cache, Whisper included); a model exported before is copied from the
    graph cache (`cache`). Returns the file the model tier runs."""
    from splitserve.export.onnx import cache

    def export() -> str:
        if family == "decoder":
            from splitserve.export.onnx.decoder import export_decoder

            return export_decoder(model, onnx_dir)
        if family == "seq2seq":
            from splitserve.export.onnx.seq2seq import export_seq2seq

            return export_seq2seq(model, onnx_dir)
        from splitserve.export.onnx.encoder import export_encoder

        return export_encoder(model, onnx_dir, outputs)

    return cache.exported(model, family, tuple(outputs), onnx_dir, export)


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
