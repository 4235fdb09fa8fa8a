"""ONNX Runtime backend: runs the bundle's exported graph. Never imports torch.

Generation bundles hold a decoder with past key values (decoder-only LMs), or an encoder and a
decoder (encoder-decoders): `stepper` runs them for the decoding loop
(`model_svc.generation`); `infer` is for every other task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from model_svc import memory
from model_svc.generation import DecoderSteps, EncoderDecoderSteps
from splitserve.core.bundle import ServingConfig


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
        idle_threads: int = 0,
    ):
        import onnxruntime as ort

        options = session_options(intra_op_threads, spin_wait)
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
        # A second session on the same graph with more threads, for a batch that runs alone
        # (`infer_alone`): latency when idle, while `session` keeps one batch per core under load.
        self.idle_threads = idle_threads if device == "cpu" and config.generation is None else 0
        self.idle_session = (
            ort.InferenceSession(str(path), session_options(self.idle_threads, spin_wait), providers=providers)
            if self.idle_threads
            else None
        )
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
            start = [int(t) for t in info.decoder_prompt_ids] or [int(info.decoder_start_token_id or 0)]
            self.stepper = OnnxEncoderDecoder(encoder, self.session, start, (info.num_kv_heads, info.head_dim))
        elif info:
            self.stepper = OnnxDecoder(self.session, (info.num_kv_heads, info.head_dim))

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._run(self.session, inputs)

    def infer_alone(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """`infer` on `idle_threads` threads: for a batch that nothing else runs beside."""
        return self._run(self.idle_session or self.session, inputs)

    def _run(self, session: Any, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {k: v for k, v in inputs.items() if k in self.graph_inputs}
        outputs = session.run(self.config.model_outputs, feeds, self.run_options)
        if next(iter(feeds.values())).size >= memory.TRIM_AFTER_TOKENS:
            memory.trim()
        return dict(zip(self.config.model_outputs, outputs, strict=True))


def session_options(intra_op_threads: int, spin_wait: bool) -> Any:
    """ONNX Runtime's options for one of the backend's sessions (0 threads: the runtime's default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    # Spinning idle threads steal the cores the other tiers (and other replicas) run on.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin_wait else "0")
    return options


def _empty_pasts(session: Any, names: list[str], kv: tuple[int, int]) -> dict[str, np.ndarray]:
    """An empty past (one row, no tokens) per past input, shaped as the graph declares it (where
    it does not, `kv`: (heads, head dim), as serving.json says: Optimum's Whisper)."""
    shapes = {i.name: i.shape for i in session.get_inputs()}

    def size(name: str, axis: int, default: int) -> int:
        dim = shapes[name][axis]
        return dim if isinstance(dim, int) else default

    return {n: np.zeros((1, size(n, 1, kv[0]), 0, size(n, 3, kv[1])), dtype=np.float32) for n in names}


class OnnxDecoder(DecoderSteps):
    """The exported decoder-only LM (`splitserve.export.onnx.decoder`): `past_key_values.<i>.key/
    value` in, `present.<i>.key/value` out (the first pass feeds empty ones)."""

    def __init__(self, session: Any, kv: tuple[int, int] = (0, 0)):
        self.session = session
        names = [i.name for i in session.get_inputs()]
        self.past_names = [n for n in names if n.startswith("past_key_values.")]
        self.with_positions = "position_ids" in names
        self.empty = _empty_pasts(session, self.past_names, kv)
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
        return {name: np.repeat(empty, rows, axis=0) for name, empty in self.empty.items()}

    def repeat(self, past: Any, beams: int) -> Any:
        return {name: np.repeat(value, beams, axis=0) for name, value in past.items()}

    def take(self, past: Any, index: np.ndarray) -> Any:
        return {name: value[index] for name, value in past.items()}


class OnnxEncoderDecoder(EncoderDecoderSteps):
    """The exported encoder-decoder (`splitserve.export.onnx.seq2seq`): the encoder graph runs once
    per prompt and returns every decoder layer's cross-attention keys/values
    (`present.<i>.encoder.*`); the decoder graph takes them (`past_key_values.<i>.encoder.*`) at
    every step beside its self-attention past (`past_key_values.<i>.decoder.*`, empty at the first
    step, growing). The encoder side of the state is those cross keys/values: beam search repeats
    and reorders them with the rest.

    Bundles exported with Optimum (a merged decoder with `use_cache_branch`, taking the encoder's
    hidden states and computing the cross keys/values on its first step) still run: `legacy`."""

    def __init__(self, encoder: Any, decoder: Any, start_ids: list[int], kv: tuple[int, int] = (0, 0)):
        self.encoder, self.decoder = encoder, decoder
        self.start_ids, self.start_id = list(start_ids), int(start_ids[0])
        names = [i.name for i in decoder.get_inputs()]
        self.with_mask = "encoder_attention_mask" in names  # Whisper's decoder takes none
        self.legacy = "use_cache_branch" in names
        past = [n for n in names if n.startswith("past_key_values.")]
        self.self_names = [n for n in past if ".decoder." in n]
        self.cross_names = [n for n in past if ".encoder." in n]
        # The past the decoder returns (legacy: the cross-attention's too, from its first step).
        self.past_names = self.self_names + (self.cross_names if self.legacy else [])
        self.empty = _empty_pasts(decoder, self.past_names, kv)
        self.outputs = ["logits", *(n.replace("past_key_values.", "present.", 1) for n in self.past_names)]
        self.encoder_outputs = (
            ["last_hidden_state"]
            if self.legacy
            else [n.replace("past_key_values.", "present.", 1) for n in self.cross_names]
        )

    def _encoded(self, feeds: dict[str, np.ndarray], beams: int) -> Any:
        """The encoder side of the state, each row repeated `beams` times: the cross keys/values
        by decoder input name (legacy: the hidden states)."""
        values = [np.repeat(v, beams, axis=0) for v in self.encoder.run(self.encoder_outputs, feeds)]
        return values[0] if self.legacy else dict(zip(self.cross_names, values, strict=True))

    def encode(self, input_ids: np.ndarray, attention_mask: np.ndarray, beams: int) -> tuple[Any, Any]:
        encoded = self._encoded({"input_ids": input_ids, "attention_mask": attention_mask}, beams)
        return encoded, np.repeat(attention_mask, beams, axis=0)

    def encode_features(self, features: np.ndarray, beams: int) -> tuple[Any, Any]:
        return self._encoded({"input_features": features}, beams), None

    def run(self, tokens: np.ndarray, past: Any, hidden: Any, mask: Any) -> tuple[np.ndarray, Any]:
        feeds: dict[str, np.ndarray] = {"input_ids": tokens}
        if self.with_mask:
            feeds["encoder_attention_mask"] = mask
        first = past is None
        if first:
            past = {name: np.repeat(empty, tokens.shape[0], axis=0) for name, empty in self.empty.items()}
        feeds.update(past)
        if self.legacy:
            feeds.update(encoder_hidden_states=hidden, use_cache_branch=np.asarray([not first]))
        else:
            feeds.update(hidden)
        logits, *presents = self.decoder.run(self.outputs, feeds)
        updated = dict(zip(self.past_names, presents, strict=True))
        if self.legacy and not first:  # the cross-attention keys/values stay those of the first step
            updated.update({n: past[n] for n in self.cross_names})
        return logits[:, -1], updated

    def take(self, past: Any, hidden: Any, mask: Any, index: np.ndarray) -> tuple[Any, Any, Any]:
        return (
            {name: value[index] for name, value in past.items()},
            hidden[index] if self.legacy else {name: value[index] for name, value in hidden.items()},
            None if mask is None else mask[index],
        )
