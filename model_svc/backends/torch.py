"""PyTorch backend: runs the source pipeline's model (for comparison with ONNX).

Generation: the same decoding loops as the ONNX backend (`model_svc.generation`), through a
`Stepper` on the model (one forward pass per token, with the model's own cache).
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from model_svc.generation import DecoderSteps, EncoderDecoderSteps
from splitserve.core.bundle import ServingConfig


class TorchBackend:
    name = "torch"
    platform = "pytorch_libtorch"

    def __init__(self, config: ServingConfig, device: str = "cpu", intra_op_threads: int = 0, dtype: str = "logged"):
        import mlflow.transformers
        import torch

        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was asked for, but torch sees no CUDA GPU")
        if intra_op_threads > 0:
            torch.set_num_threads(intra_op_threads)
        components = mlflow.transformers.load_model(config.source_model_uri, return_type="components")
        self.torch = torch
        self.device = torch.device(device)
        self.model = components["model"].eval().to(self.device)
        if dtype != "logged":
            self.model = self.model.to(torch.bfloat16 if dtype == "bf16" else torch.float32)
        self.config = config
        # transformers 5 names the forward's cache `cache` (`past_key_values` is deprecated); older
        # or remote code: `past_key_values`.
        self.cache_arg = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        self.stepper: Any = None
        if config.generation is not None and config.generation.encoder_decoder:
            self.stepper = TorchEncoderDecoder(self, int(config.generation.decoder_start_token_id or 0))
            self.stepper.start_ids = [int(t) for t in config.generation.decoder_prompt_ids] or [self.stepper.start_id]
        elif config.generation is not None:
            self.stepper = TorchDecoder(self)

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        with torch.inference_mode():
            # Audio masks travel as INT8; the model takes int64.
            wide = {k: v.astype(np.int64) if v.dtype == np.int8 else v for k, v in inputs.items()}
            tensors = {k: torch.from_numpy(v).to(self.device) for k, v in wide.items()}
            if self.config.table is not None:  # TAPAS: its heads, as the bundle's graph gives them
                return {k: v.float().cpu().numpy() for k, v in tapas_heads(self.model, **tensors).items()}
            out = self.model(**tensors)
        return {name: out[name].float().cpu().numpy() for name in self.config.model_outputs}

    @staticmethod
    def cache_of(output: Any) -> Any:
        """The cache a forward returned (`cache`, or `past_key_values` before transformers 5)."""
        cache = output.get("cache")
        return cache if cache is not None else output.get("past_key_values")

    def tensor(self, array: np.ndarray) -> Any:
        return self.torch.from_numpy(np.ascontiguousarray(array)).to(self.device)


class TorchDecoder(DecoderSteps):
    """A causal LM with its own cache (a transformers `Cache`, reordered in place)."""

    def __init__(self, backend: TorchBackend):
        self.b = backend

    def run(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray, past: Any
    ) -> tuple[np.ndarray, Any]:
        with self.b.torch.inference_mode():
            out = self.b.model(
                input_ids=self.b.tensor(input_ids),
                attention_mask=self.b.tensor(attention_mask),
                position_ids=self.b.tensor(position_ids),
                use_cache=True,
                **{self.b.cache_arg: past},
            )
        return out.logits[:, -1].float().cpu().numpy(), self.b.cache_of(out)

    def empty_past(self, rows: int) -> Any:
        return None

    def repeat(self, past: Any, beams: int) -> Any:
        past.batch_repeat_interleave(beams)
        return past

    def take(self, past: Any, index: np.ndarray) -> Any:
        past.reorder_cache(self.b.tensor(index.astype(np.int64)))
        return past


class TorchEncoderDecoder(EncoderDecoderSteps):
    """An encoder-decoder (T5, BART): the encoder once per prompt, then the decoder with its cache."""

    def __init__(self, backend: TorchBackend, start_id: int):
        self.b, self.start_id = backend, start_id

    def encode(self, input_ids: np.ndarray, attention_mask: np.ndarray, beams: int) -> tuple[Any, Any]:
        ids, mask = self.b.tensor(input_ids), self.b.tensor(attention_mask)
        with self.b.torch.inference_mode():
            hidden = encode(self.b.model, ids, mask)
        return hidden.repeat_interleave(beams, dim=0), mask.repeat_interleave(beams, dim=0)

    def encode_features(self, features: np.ndarray, beams: int) -> tuple[Any, Any]:
        with self.b.torch.inference_mode():
            hidden = self.b.model.get_encoder()(input_features=self.b.tensor(features)).last_hidden_state
        return hidden.repeat_interleave(beams, dim=0), None

    def run(self, tokens: np.ndarray, past: Any, hidden: Any, mask: Any) -> tuple[np.ndarray, Any]:
        with self.b.torch.inference_mode():
            out = self.b.model(
                encoder_outputs=(hidden,),
                attention_mask=mask,
                decoder_input_ids=self.b.tensor(tokens),
                use_cache=True,
                **{self.b.cache_arg: past},
            )
        return out.logits[:, -1].float().cpu().numpy(), self.b.cache_of(out)

    def take(self, past: Any, hidden: Any, mask: Any, index: np.ndarray) -> tuple[Any, Any, Any]:
        rows = self.b.tensor(index.astype(np.int64))
        past.reorder_cache(rows)
        return past, hidden.index_select(0, rows), None if mask is None else mask.index_select(0, rows)


def tapas_heads(
    model: Any, input_ids: Any, attention_mask: Any, token_type_ids: Any, position_ids: Any
) -> dict[str, Any]:
    """TapasForQuestionAnswering's encoder (positions given) and its token-level heads, before the
    segmented reductions of its forward: what a table-question-answering bundle's graph gives
    (`splitserve.export.table`); the postprocess stage selects the cells."""
    import torch

    out = model.tapas(
        input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, position_ids=position_ids
    )
    hidden = out.last_hidden_state
    tokens = (torch.einsum("bsj,j->bs", hidden, model.output_weights) + model.output_bias) / model.config.temperature
    columns = torch.einsum("bsj,j->bs", hidden, model.column_output_weights) + model.column_output_bias
    if model.config.num_aggregation_labels > 0:
        aggregation = model.aggregation_classifier(out.pooler_output)
    else:  # no aggregation head: an empty output keeps the graph's outputs fixed
        aggregation = hidden[:, 0, :0]
    return {"token_logits": tokens, "column_logits": columns, "logits_aggregation": aggregation}


def encode(model: Any, input_ids: Any, attention_mask: Any) -> Any:
    """An encoder-decoder's encoder hidden states (T5's encoder stack must be told use_cache=False:
    after an ONNX export its config says True)."""
    import inspect

    encoder = model.get_encoder()
    kwargs = {"use_cache": False} if "use_cache" in inspect.signature(encoder.forward).parameters else {}
    return encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
