"""The serving bundle: `serving.json`, `tokenizer/`, `onnx/` inside an MLflow pyfunc model.

Tiers call `load_bundle(uri, parts)`, which fetches only the artifacts they need and verifies
their content hashes against `serving.json`. MLflow is never imported into a tier process:
remote URIs are fetched by a short-lived child process (`python -m splitserve.core.fetch`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from splitserve.core.errors import BundleError, BundleMismatch, ModelNotFound, shown
from splitserve.core.generation import GenerationInfo
from splitserve.core.quality import Int8Reference

FORMAT_VERSION = 2  # 2: typed `generation`, `output_shapes`
ARTIFACT_DIR = "artifacts"
CONFIG_FILE = "serving.json"
PARTS = ("tokenizer", "onnx", "template")
OPTIONAL_PARTS = ("template",)  # fetched and verified where the bundle has them


@dataclass
class ServingConfig:
    """What `serving.json` holds. Every tier reads it; `fingerprint` identifies the bundle."""

    name: str
    task: str
    source_model_uri: str
    model_inputs: list[str]
    model_outputs: list[str]
    max_length: int
    # Each model output's shape, -1 for variable dimensions ([rows, tokens, ...] outputs are the
    # token-level ones), as the model tier reports them in ModelMetadata.
    output_shapes: dict[str, list[int]] = field(default_factory=dict)
    id2label: dict[int, str] | None = None
    problem_type: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    # Where each default came from: "--set", "signature" and "model_config" (the source model's
    # MLflow settings) or "template"; the generation tasks' others are the model's generation_config.
    defaults_from: dict[str, str] = field(default_factory=dict)
    source_dtype: str = "float32"  # the torch dtype the source was logged in (the torch backend runs it so)
    adapter: dict[str, Any] | None = None  # a PEFT source's adapter (merged into the exported graph)
    onnx_file: str = "model.onnx"
    quantization: str | None = None
    # int8 only: the weights' format ("7-bit signed weights", "8-bit unsigned weights": both right
    # on every x86-64 CPU, see splitserve.export.quantize.WEIGHT_FORMATS).
    quantization_weights: str | None = None
    # int8 only: the MatMul nodes left in fp32 so that the quality gate passes (none: all quantized).
    quantization_excluded: list[str] = field(default_factory=list)
    # int8 only: the gate's inputs and the fp32 graph's answers, which the model tier checks its
    # int8 graph against on the CPU it serves on (`splitserve.core.quality`).
    int8_check: Int8Reference | None = None
    parity: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    # Generation tasks only (see `splitserve.core.generation.GenerationInfo`).
    generation: GenerationInfo | None = None
    # MLflow's prompt_template of the source model ("... {prompt} ..."), applied by preprocess.
    prompt_template: str | None = None
    # The user's template module (`artifacts/template/<name>.py` or `<name>/`), see splitserve.stages.template.
    template: str | None = None
    # Model inputs other than INT64 [rows, tokens] (audio: FP32 samples or log-mel features): their
    # OIP datatype and shape (-1: variable).
    input_types: dict[str, str] = field(default_factory=dict)
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    # Rows run at their own length only, never padded together: graphs without an attention mask
    # whose outputs padding would change (wav2vec2's audio encoders).
    exact_lengths: bool = False
    # Audio tasks: the rate the feature extractor takes (Hz) and the longest audio one record may
    # hold (seconds: the model's window, or the bundle's limit).
    sampling_rate: int | None = None
    max_audio_seconds: float | None = None
    # CTC audio encoders: the feature encoder's convolutions ([kernel, stride] each), which give a
    # row's logit frames from its samples.
    conv_layers: list[list[int]] = field(default_factory=list)
    # The model's embedding table sizes: the model tier refuses ids and token types outside them
    # (None in bundles exported before they were recorded: only negative values are refused then).
    vocab_size: int | None = None
    type_vocab_size: int | None = None
    # A text-generation source logged with MLflow's task="llm/v1/completions" or "llm/v1/chat": the
    # bundle's pyfunc answers MLflow's OpenAI-style request and response schemas
    # (`splitserve.llm_schema`), its `model` field naming `llm_model_name` (MLflow's source_model_name).
    llm_task: str | None = None
    llm_model_name: str | None = None
    # A sentence-transformers stack's modules after its Pooling, applied to every pooled vector
    # (`splitserve.core.pooling.Head`): {"dense": [{"activation", "in", "out"}, ...] (weights in
    # onnx/dense.npz), "normalize": its final Normalize}.
    head: dict[str, Any] | None = None
    # A sentence-transformers model's named prompts (its `prompts`), which a feature-extraction
    # request picks with `prompt_name` (the default one is `prompt_template`).
    prompts: dict[str, str] = field(default_factory=dict)
    # Inputs whose values index a table of the model's (besides input_ids and token_type_ids, which
    # vocab_size and type_vocab_size bound): the exclusive upper bound of their values, one per
    # column of the last dimension where there are several (TAPAS's 7 token types, its position ids).
    input_ranges: dict[str, list[int]] = field(default_factory=dict)
    # table-question-answering: the TAPAS facts the stages need (`splitserve.tasks.table_question_answering`).
    table: dict[str, Any] | None = None
    format_version: int = FORMAT_VERSION
    fingerprint: str = ""

    @property
    def encoder_decoder(self) -> bool:
        """A generation bundle of an encoder-decoder (T5, BART): an encoder and a decoder graph."""
        return self.generation is not None and self.generation.encoder_decoder

    @property
    def max_positions(self) -> int | None:
        """Generation: the positions a decoder-only LM's prompt and new tokens must fit in
        (None for encoder-decoders, whose prompt goes to the encoder)."""
        return None if self.encoder_decoder else self.max_length

    @property
    def pooled_width(self) -> int:
        """The width of a pooled vector: the head's last Dense layer's, else the hidden states' (0: unknown)."""
        dense = (self.head or {}).get("dense") or []
        if dense:
            return int(dense[-1]["out"])
        return int((self.output_shapes.get(self.model_outputs[0]) or [0])[-1]) if self.model_outputs else 0

    @property
    def token_outputs(self) -> list[str]:
        """The outputs with one value per token ([rows, tokens, ...]: a variable dim 1), which the
        model tier's batcher cuts back to each request's own length."""
        if self.exact_lengths:  # audio rows are never padded or cut; their frames are not their samples
            return []
        return [n for n, shape in self.output_shapes.items() if len(shape) >= 2 and shape[1] == -1]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ServingConfig:
        data = json.loads(text)
        if data.get("format_version") != FORMAT_VERSION:
            raise BundleError(
                f"serving.json format_version {data.get('format_version')!r} is not supported "
                f"(this splitserve reads {FORMAT_VERSION})"
            )
        if data.get("id2label") is not None:
            data["id2label"] = {int(k): v for k, v in data["id2label"].items()}
        if data.get("generation") is not None:
            data["generation"] = GenerationInfo.from_dict(data["generation"])
        if data.get("int8_check") is not None:
            data["int8_check"] = Int8Reference.from_dict(data["int8_check"])
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def compute_fingerprint(self) -> str:
        content = asdict(self)
        content.pop("fingerprint")
        _drop_later_defaults(content)
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:32]


# Fields added after format 2 shipped (audio), left out of the fingerprint while they hold their
# defaults: bundles exported before them keep their fingerprints.
_LATER_FIELDS: dict[str, Any] = {
    "input_types": {},
    "input_shapes": {},
    "exact_lengths": False,
    "sampling_rate": None,
    "max_audio_seconds": None,
    "conv_layers": [],
    "vocab_size": None,
    "type_vocab_size": None,
    "quantization_excluded": [],
    "int8_check": None,
    "quantization_weights": None,
    "llm_task": None,
    "llm_model_name": None,
    "head": None,
    "prompts": {},
    "input_ranges": {},
    "table": None,
}
_LATER_GENERATION_FIELDS: dict[str, Any] = {"decoder_prompt_ids": [], "languages": {}, "tasks": {}}
_LATER_DECODING_FIELDS: dict[str, Any] = {
    "suppress_tokens": [],
    "begin_suppress_tokens": [],
    "no_timestamps_token_id": None,
    "max_initial_timestamp_index": None,
    "prompt_token_ids": [],
}


def _drop_later_defaults(content: dict[str, Any]) -> None:
    for later, where in (
        (_LATER_FIELDS, content),
        (_LATER_GENERATION_FIELDS, content.get("generation")),
        (_LATER_DECODING_FIELDS, (content.get("generation") or {}).get("model_settings")),
    ):
        for name, default in later.items():
            if where is not None and name in where and where[name] == default:
                del where[name]


def hash_tree(path: Path) -> str:
    """Content hash of a file or a directory tree (relative paths and bytes)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        rel = file.name if path.is_file() else file.relative_to(path).as_posix()
        digest.update(rel.encode() + b"\0")
        with open(file, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


@dataclass
class Bundle:
    """A bundle on local disk: `root` is the MLflow model directory."""

    root: Path
    config: ServingConfig

    @property
    def artifacts(self) -> Path:
        return self.root / ARTIFACT_DIR

    @property
    def tokenizer_dir(self) -> Path:
        return self.artifacts / "tokenizer"

    @property
    def template_dir(self) -> Path:
        return self.artifacts / "template"

    @property
    def onnx_path(self) -> Path:
        return self.artifact_file("onnx", self.config.onnx_file)

    def artifact_file(self, part: str, name: str) -> Path:
        """A file that serving.json names inside an artifact part: refused unless it is a plain
        relative path that stays inside the part (the hashed, verified folder)."""
        base = (self.artifacts / part).resolve()
        path = (base / name).resolve()
        if Path(name).is_absolute() or ".." in Path(name).parts or not path.is_relative_to(base):
            raise BundleError(f"{self.root}: serving.json names {shown(name)} outside the bundle's {part!r} artifact")
        return path

    @property
    def fingerprint(self) -> str:
        return self.config.fingerprint

    def verify(self, parts: tuple[str, ...]) -> None:
        """Check serving.json's own hash and the hashes of the given artifact parts."""
        if self.config.compute_fingerprint() != self.config.fingerprint:
            raise BundleError(f"{self.root}: serving.json does not match its fingerprint")
        for part in parts:
            if part in OPTIONAL_PARTS and part not in self.config.artifacts:
                continue
            expected = self.config.artifacts.get(part)
            path = self.artifacts / part
            if expected is None or not path.exists():
                raise BundleError(f"{self.root}: bundle has no {part!r} artifact")
            links = [p for p in [path, *path.rglob("*")] if p.is_symlink()]
            if links:  # a link's target could change after the check
                raise BundleError(f"{self.root}: artifact {part!r} holds a symbolic link ({links[0].name})")
            if hash_tree(path) != expected:
                raise BundleError(f"{self.root}: artifact {part!r} does not match its hash")
        if "onnx" in parts:
            self.onnx_path  # noqa: B018 - raises for a path outside the artifact
            if self.config.generation is not None and self.config.generation.encoder_file:
                self.artifact_file("onnx", self.config.generation.encoder_file)


def read_local(root: Path) -> Bundle:
    config_path = root / ARTIFACT_DIR / CONFIG_FILE
    if not root.exists():
        raise BundleError(f"{root} does not exist: give a serving bundle's folder or MLflow URI")
    if not config_path.is_file() and (root / "MLmodel").is_file():
        raise BundleError(
            f"{root} is a logged model, not a serving bundle (no {ARTIFACT_DIR}/{CONFIG_FILE}): "
            f"run `splitserve export {root}` first and serve the URI it prints"
        )
    if not config_path.is_file():
        raise BundleError(f"{root} is not a splitserve bundle (no {ARTIFACT_DIR}/{CONFIG_FILE})")
    return Bundle(root=root, config=ServingConfig.from_json(config_path.read_text()))


def load_bundle(uri: str, parts: tuple[str, ...] = (), verify: bool = True, cache_dir: str | None = None) -> Bundle:
    """Fetch serving.json and the named artifact parts of the bundle at `uri`, verified.

    `uri` is a local directory (used in place) or anything MLflow resolves (runs:/, models:/name/3,
    models:/name@alias, models:/m-<id>, file:...), fetched into the host's bundle cache
    (`splitserve.core.cache`, in `cache_dir` if given).
    """
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown bundle parts {sorted(unknown)}; known: {PARTS}")
    scheme = re.match(r"^([A-Za-z][\w+.-]+):", uri)
    if scheme is None or scheme.group(1) == "file":
        local = Path(uri[len("file://") :] if uri.startswith("file://") else uri)
        bundle = read_local(local.resolve())
    else:
        from splitserve.core.cache import fetch

        bundle = read_local(fetch(uri, parts, cache_dir))
        if bundle.fingerprint != bundle.root.name:
            raise BundleError(f"{bundle.root}: cached serving.json is not bundle {bundle.root.name}; delete the folder")
    if verify:
        bundle.verify(parts)
    return bundle


def check_model(requested: str, served: str, required: bool = False) -> None:
    """Refuse a request for another model; an empty name means the served one unless `required`."""
    if (requested or required) and requested != served:
        raise ModelNotFound(f"model {shown(requested)} is not served here; this tier serves {served!r}")


def check_fingerprint(sent: str, mine: str, source: str) -> None:
    """Refuse to combine tiers loaded from different bundles (an empty fingerprint is not pinned)."""
    if sent and sent != mine:
        raise BundleMismatch(
            f"bundle mismatch: {source} is for bundle {shown(sent)}, this tier serves {mine}; "
            "all tiers must be loaded from the same serving bundle"
        )
