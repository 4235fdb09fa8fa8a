"""ONNX Runtime backend: runs the bundle's exported graph. Never imports torch.

Generation bundles hold a decoder with past key values (decoder-only LMs), or an encoder and a
merged decoder (encoder-decoders): `stepper` runs them for the decoding loop
(`model_svc.generation`); `infer` is for every other task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from model_svc import memory
from model_svc.generation import DecoderSteps, EncoderDecoderSteps
from splitserve.core.bundle import ServingConfig
from splitserve.core.generation import GenerationInfo


class OnnxBackend:
    name = "onnx"
    platform = "onnxruntime_onnx"

    def __init__(
        self,
        path: Path,
        config: ServingConfig,
        device: str = "cpu",
        intra_op_threads: int = 0,
        spin_wait: bool = False,
        encoder_path: Path | None = None,
    ):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        # Spinning idle threads steal the cores the other tiers (and other replicas) run on.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin_wait else "0")
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RuntimeError(
                    "device 'cuda' was asked for, but this onnxruntime has no CUDA execution provider "
                    f"(available: {ort.get_available_providers()}); install onnxruntime-gpu on a GPU machine"
                )
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        # Give the arena's unused memory back after each run: a large batch would otherwise keep
        # the process at its peak for good (measured: 32 rows of 512 tokens in parts of 8 left
        # MiniLM at 665 MB RSS with the arena kept, 207 MB with it shrunk).
        self.run_options = ort.RunOptions()
        arenas = "cpu:0;gpu:0" if device == "cuda" else "cpu:0"
        self.run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", arenas)
        memory.map_large_blocks()
        self.config = config
        info = config.generation
        graph_inputs = {i.name for i in self.session.get_inputs()}
        expected = info.graph_inputs if info else config.model_inputs
        # An audio bundle's mask tells the batcher the rows' lengths; a graph without one never sees it.
        extra = {"attention_mask"} if config.exact_lengths else set()
        if not graph_inputs <= set(expected) or set(expected) - graph_inputs - extra:
            raise RuntimeError(f"{path}: graph inputs {sorted(graph_inputs)} != serving.json {sorted(expected)}")
        self.graph_inputs = graph_inputs
        self.stepper: Any = None
        if info and config.encoder_decoder:
            assert encoder_path is not None, "an encoder-decoder bundle names its encoder graph"
            encoder = ort.InferenceSession(str(encoder_path), options, providers=providers)
            self.stepper = OnnxEncoderDecoder(encoder, self.session, info)
        elif info:
            self.stepper = OnnxDecoder(self.session, info)

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {k: v for k, v in inputs.items() if k in self.graph_inputs}
        outputs = self.session.run(self.config.model_outputs, feeds, self.run_options)
        if next(iter(feeds.values())).size >= memory.TRIM_AFTER_TOKENS:
            memory.trim()
        return dict(zip(self.config.model_outputs, outputs, strict=True))


class OnnxDecoder(DecoderSteps):
    """The exported decoder-only LM: `past_key_values.<i>.key/value` in, `present.<i>.key/value`
    out (the first pass feeds empty ones)."""

    def __init__(self, session: Any, info: GenerationInfo):
        self.session = session
        names = info.graph_inputs
        self.past_names = [n for n in names if n.startswith("past_key_values.")]
        self.with_positions = "position_ids" in names
        self.empty = np.zeros((1, info.num_kv_heads, 0, info.head_dim), dtype=np.float32)
        self.outputs = ["logits", *(n.replace("past_key_values.", "present.", 1) for n in self.past_names)]

    def run(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray, past: Any
    ) -> tuple[np.ndarray, Any]:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.with_positions:
            feeds["position_ids"] = position_ids
        feeds.update(past)
        logits, *presents = self.session.run(self.outputs, feeds)
        return logits[:, -1], dict(zip(self.past_names, presents, strict=True))

    def empty_past(self, rows: int) -> Any:
        return dict.fromkeys(self.past_names, np.repeat(self.empty, rows, axis=0))

    def repeat(self, past: Any, beams: int) -> Any:
        return {name: np.repeat(value, beams, axis=0) for name, value in past.items()}

    def take(self, past: Any, index: np.ndarray) -> Any:
        return {name: value[index] for name, value in past.items()}


class OnnxEncoderDecoder(EncoderDecoderSteps):
    """Optimum's encoder-decoder export: the encoder graph runs once per prompt; the merged
    decoder graph (`use_cache_branch` false on the first step, with empty past key values) takes
    the encoder's hidden states and the past key values of its self-attention
    (`past_key_values.<i>.decoder.*`, growing) and cross-attention (`.encoder.*`, computed on the
    first step)."""

    def __init__(self, encoder: Any, decoder: Any, info: GenerationInfo):
        self.encoder, self.decoder = encoder, decoder
        self.start_id = int(info.decoder_start_token_id or 0)
        self.start_ids = [int(t) for t in info.decoder_prompt_ids] or [self.start_id]
        names = info.graph_inputs
        self.with_mask = "encoder_attention_mask" in names  # Whisper's decoder takes none
        self.past_names = [n for n in names if n.startswith("past_key_values.")]
        self.heads, self.head_dim = info.num_kv_heads, info.head_dim
        self.outputs = ["logits", *(n.replace("past_key_values.", "present.", 1) for n in self.past_names)]

    def encode(self, input_ids: np.ndarray, attention_mask: np.ndarray, beams: int) -> tuple[Any, Any]:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        (hidden,) = self.encoder.run(["last_hidden_state"], feeds)
        return np.repeat(hidden, beams, axis=0), np.repeat(attention_mask, beams, axis=0)

    def encode_features(self, features: np.ndarray, beams: int) -> tuple[Any, Any]:
        (hidden,) = self.encoder.run(["last_hidden_state"], {"input_features": features})
        return np.repeat(hidden, beams, axis=0), None

    def run(self, tokens: np.ndarray, past: Any, hidden: Any, mask: Any) -> tuple[np.ndarray, Any]:
        feeds: dict[str, np.ndarray] = {
            "input_ids": tokens,
            "encoder_hidden_states": hidden,
            "use_cache_branch": np.asarray([past is not None]),
        }
        if self.with_mask:
            feeds["encoder_attention_mask"] = mask
        if past is None:
            empty = np.zeros((tokens.shape[0], self.heads, 0, self.head_dim), dtype=np.float32)
            past = dict.fromkeys(self.past_names, empty)
        feeds.update(past)
        logits, *presents = self.decoder.run(self.outputs, feeds)
        updated = dict(zip(self.past_names, presents, strict=True))
        if feeds["use_cache_branch"][0]:  # the cross-attention keys/values stay those of the first step
            updated.update({n: v for n, v in past.items() if ".encoder." in n})
        return logits[:, -1], updated

    def take(self, past: Any, hidden: Any, mask: Any, index: np.ndarray) -> tuple[Any, Any, Any]:
        return (
            {name: value[index] for name, value in past.items()},
            hidden[index],
            None if mask is None else mask[index],
        )
