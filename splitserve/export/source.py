"""What the logged source model says beyond its weights: MLflow's inference settings
(`model_config`, the signature's param defaults, the prompt template) and its flavor facts (task,
dtype, PEFT adapter, reference-only weights). Export turns every inference setting into a bundle
default, or refuses the model naming the setting it cannot honour: never a silent difference
from what `mlflow models serve` of the source answers.

Precedence of a param's default, as MLflow applies them (`model_config | params`) and below what
the user says at export: `export --set` > the signature's param default > `model_config` > the
template's DEFAULTS > the model's generation_config (generation tasks) > the pipeline's default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from splitserve.core.errors import ExportError
from splitserve.tasks.base import Task

# MLflow model_config keys that change nothing a request answers (how the pipeline batches).
NEUTRAL = ("batch_size", "num_workers")
# MLflow's own text-generation options (not pipeline params) that splitserve implements.
MLFLOW_OPTIONS = ("collapse_whitespace",)
# MLflow's inference tasks whose request and response schemas the bundle's pyfunc answers
# (`splitserve.llm_schema`).
LLM_TASKS = ("llm/v1/completions", "llm/v1/chat")


@dataclass
class SourceSettings:
    task: str  # the pipeline task MLflow logged ("translation_en_to_fr", ...)
    model_config: dict[str, Any]
    signature_defaults: dict[str, Any]
    prompt_template: str | None
    flavor: dict[str, Any] = field(default_factory=dict)
    sentence_transformers: bool = False  # logged with MLflow's sentence_transformers flavor

    @property
    def reference_only(self) -> bool:
        """Logged with save_pretrained=False: the weights are a reference to the hub."""
        return "source_model_revision" in self.flavor

    @property
    def llm_task(self) -> str | None:
        """MLflow's `llm/v1/...` inference task, if the model was logged with one."""
        value = self.flavor.get("inference_task") or self.flavor.get("task")
        return value if isinstance(value, str) and value.startswith("llm/") else None


def read_source(source_uri: str) -> SourceSettings:
    """The source model's MLflow settings; ExportError in one line for a wrong URI, a bundle, or a
    model that is not a transformers model."""
    import mlflow

    from splitserve.core.fetch import missing_store, store_of

    missing = missing_store(source_uri)  # looking it up would leave an empty store behind
    if missing:
        raise ExportError(f"cannot find the source model {source_uri!r}: {missing}")
    try:
        info = mlflow.models.get_model_info(source_uri)
    except Exception as exc:  # noqa: BLE001 - MLflow's many errors for a wrong URI
        raise ExportError(
            f"cannot find the source model {source_uri!r}: {_first_line(exc)} (looked up in {store_of(source_uri)})"
        ) from None
    if "transformers" not in info.flavors and "sentence_transformers" in info.flavors:
        from splitserve.export.sentence_transformers import encode_defaults, refuse_cross_encoder

        refuse_cross_encoder(info.flavors["sentence_transformers"])
        return SourceSettings(
            task="feature-extraction",
            model_config={},
            signature_defaults=encode_defaults(_signature_defaults(info)),
            prompt_template=None,
            flavor=dict(info.flavors["sentence_transformers"]),
            sentence_transformers=True,
        )
    if "transformers" not in info.flavors:
        if "serving.json" in (info.flavors.get("python_function", {}).get("artifacts") or {}):
            raise ExportError(
                f"{source_uri!r} is a splitserve serving bundle already; export takes the transformers model it "
                "was exported from (see `splitserve inspect` for its source_model_uri)"
            )
        raise ExportError(
            f"{source_uri!r} is not a transformers model (its MLflow flavors: {sorted(info.flavors)}); log one with "
            "`splitserve log` or mlflow.transformers.log_model"
        )
    pyfunc = info.flavors.get("python_function", {})
    flavor = dict(info.flavors.get("transformers", {}))
    defaults = _signature_defaults(info)
    return SourceSettings(
        task=str(flavor.get("task", "")),
        model_config=dict(pyfunc.get("model_config") or pyfunc.get("config") or {}),
        signature_defaults={k: v for k, v in defaults.items() if v is not None},
        prompt_template=(info.metadata or {}).get("prompt_template"),
        flavor=flavor,
    )


def _signature_defaults(info: Any) -> dict[str, Any]:
    """The param defaults of a logged model's MLflow signature (MLflow passes them at predict)."""
    params = info.signature.params if info.signature is not None else None
    return {p.name: p.default for p in params.params} if params is not None else {}


def inference_defaults(source: SourceSettings, task: Task) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    """(param defaults, where each came from, MLflow options) from the source's model_config and
    signature; ExportError naming any setting splitserve cannot honour."""
    if source.llm_task == "llm/v1/embeddings":
        raise ExportError(
            "the source model was logged with MLflow's task='llm/v1/embeddings' (OpenAI-style embeddings input "
            "and output schemas), which splitserve does not take; log it as a plain feature-extraction pipeline "
            '(without `task="llm/v1/embeddings"`): the gateway then answers that schema itself at POST /v1/embeddings'
        )
    if source.llm_task and (source.llm_task not in LLM_TASKS or task.name != "text-generation"):
        raise ExportError(
            f"the source model was logged with MLflow's task={source.llm_task!r} for a {task.name} pipeline; "
            f"splitserve serves {list(LLM_TASKS)} for text-generation pipelines only; log it as a plain "
            f'{task.name} pipeline (without `task="llm/v1/..."`) to serve it'
        )
    accepted = {p.name: p for p in task.params}
    defaults: dict[str, Any] = {}
    sources: dict[str, str] = {}
    options: dict[str, Any] = {}
    for origin, settings in (("model_config", source.model_config), ("signature", source.signature_defaults)):
        refused = []
        for name, value in settings.items():
            if name in accepted:
                try:
                    defaults[name] = accepted[name].validate(name, value)
                except Exception as exc:  # noqa: BLE001 - the param's own message
                    raise ExportError(f"the source model's MLflow {origin} sets {exc}") from None
                sources[name] = origin
            elif task.streams and name in MLFLOW_OPTIONS:
                options[name] = value
            elif name not in NEUTRAL:
                refused.append(name)
        if refused:
            raise ExportError(
                f"the source model's MLflow {origin} sets {sorted(refused)}, which splitserve cannot honour for task "
                f"{task.name} (its params: {sorted(accepted)}); remove them, or log the model without them"
            )
    if source.llm_task and options:  # MLflow's pyfunc fails on them too (it rewrites text, not token ids)
        raise ExportError(
            f"the source model's MLflow model_config sets {sorted(options)}, which MLflow's task={source.llm_task!r} "
            "does not take; log the model without them"
        )
    return defaults, sources, options


@dataclass
class SourceModel:
    """The source model as export uses it: `exported` goes to the ONNX exporter (a PEFT adapter
    merged into its base), `reference` is what PyTorch parity is checked against (the model as MLflow loads
    it, in fp32)."""

    exported: Any
    reference: Any
    tokenizer: Any
    task: str  # the pipeline task ("translation_en_to_fr", ...)
    dtype: str  # the logged torch dtype ("float32", "bfloat16", ...)
    adapter: dict[str, Any] | None  # the PEFT adapter's identity, if any
    components: dict[str, Any]  # everything MLflow loaded (audio tasks: the feature extractor too)
    # What the model's own structure sets (a sentence-transformers stack: pooling, normalize, its
    # prompt), below every MLflow setting and `export --set`.
    defaults: dict[str, Any] = field(default_factory=dict)
    defaults_origin: str = ""
    prompt_template: str | None = None
    # A sentence-transformers stack's modules after Pooling (serving.json's `head`) and its Dense
    # layers' weights (written to onnx/dense.npz).
    head: dict[str, Any] | None = None
    head_arrays: dict[str, Any] = field(default_factory=dict)
    prompts: dict[str, str] = field(default_factory=dict)  # its named prompts (`prompt_name`)


def load_source_model(source_uri: str, source: SourceSettings) -> SourceModel:
    import copy

    import mlflow

    if source.sentence_transformers:
        from splitserve.export.sentence_transformers import load_sentence_transformer

        return load_sentence_transformer(source_uri)
    try:
        components = mlflow.transformers.load_model(source_uri, return_type="components")
    except Exception as exc:  # noqa: BLE001 - one clear line instead of MLflow's or the hub's traceback
        if source.reference_only:
            repo = source.flavor.get("source_model_name")
            revision = source.flavor.get("source_model_revision")
            raise ExportError(
                f"the source model was logged with save_pretrained=False: its weights are {repo!r} (revision "
                f"{revision}) on the Hugging Face Hub, which is neither reachable nor in the local cache "
                f"(HF_HOME); store them in the logged model with "
                f"mlflow.transformers.persist_pretrained_model({source_uri!r}), or fill the cache"
            ) from None
        raise ExportError(f"cannot load the source model {source_uri!r}: {_first_line(exc)}") from None
    model = components["model"]
    dtype = str(getattr(model, "dtype", "torch.float32")).removeprefix("torch.")
    reference = model.float().eval()
    exported, adapter = reference, None
    if type(model).__module__.startswith("peft"):
        config = next(iter(model.peft_config.values()))
        adapter = {
            "peft_type": str(getattr(config.peft_type, "value", config.peft_type)),
            "base_model": getattr(config, "base_model_name_or_path", None),
            "r": getattr(config, "r", None),
            "lora_alpha": getattr(config, "lora_alpha", None),
            "target_modules": sorted(getattr(config, "target_modules", None) or []),
        }
        exported = copy.deepcopy(reference).merge_and_unload().eval()  # the exporter takes plain transformers models
    return SourceModel(exported, reference, components.get("tokenizer"), components["task"], dtype, adapter, components)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
