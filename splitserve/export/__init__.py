"""`splitserve export`: source MLflow transformers model -> ONNX -> parity check -> serving bundle.

Heavy dependencies (torch, mlflow, onnxruntime) are imported inside `export_bundle`.
The steps live in their own modules: `onnx` (the graphs, one module per family), `parity` (against PyTorch),
`generation` (what generation needs), `quantize` (int8 and its quality gate), `signature`
(params, code, requirements), `samples` (the texts every check runs on), `corpus` (int8's calibration
and gate texts, held apart).
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from splitserve import tasks
from splitserve.core.bundle import CONFIG_FILE, Bundle, ServingConfig, hash_tree
from splitserve.core.errors import ExportError
from splitserve.core.generation import DEFAULT_MAX_NEW_TOKENS_LIMIT, OUTPUT, GenerationInfo
from splitserve.core.pooling import DENSE_FILE
from splitserve.core.quality import DEFAULT_QUALITY_THRESHOLDS
from splitserve.export.audio import export_audio
from splitserve.export.corpus import CALIBRATION_TEXTS, GATE_TEXTS
from splitserve.export.generation import generation_info
from splitserve.export.onnx import export_graphs, graph_inputs, max_length_of, output_shapes
from splitserve.export.parity import check_generation_parity, check_parity, check_seq2seq_parity
from splitserve.export.quantize import Quantized, quality_thresholds_for, quantize_within_gate
from splitserve.export.samples import QUALITY_TEXTS, SAMPLE_TEXTS
from splitserve.export.signature import bundle_requirements, code_paths, llm_signature, signature_for
from splitserve.export.source import inference_defaults, load_source_model, read_source
from splitserve.export.table import export_table
from splitserve.export.template import check_template, read_template, stage_template
from splitserve.tasks.base import Task

__all__ = ["DEFAULT_QUALITY_THRESHOLDS", "bundle_name", "export_bundle"]


def bundle_name(source_uri: str, name: str | None, register: str | None) -> str:
    if name:
        return name
    if register:
        return register
    if source_uri.startswith("models:/") and not source_uri.startswith("models:/m-"):
        return source_uri[len("models:/") :].split("/")[0].split("@")[0]
    return "model"


def export_bundle(
    source_uri: str,
    name: str | None = None,
    register: str | None = None,
    tolerance: float = 1e-4,
    defaults: dict[str, Any] | None = None,
    show_progress: bool = True,
    quantize: str | None = None,
    quality_thresholds: dict[str, float] | None = None,
    max_new_tokens_limit: int = DEFAULT_MAX_NEW_TOKENS_LIMIT,
    template: str | Path | None = None,
    max_length: int | None = None,
) -> str:
    """Export the source model at `source_uri` and log the serving bundle; returns its URI.

    `quantize="int8"` replaces the bundle's ONNX graph with an int8 one (static QDQ, dynamic or
    blockwise, the first candidate that passes, about fastest first), after the fp32 graph passed
    the PyTorch parity check, and only if the int8 graph keeps the quality of the fp32 one on the
    gate's texts (`quality_thresholds` overrides `DEFAULT_QUALITY_THRESHOLDS`).
    `max_new_tokens_limit`: generation tasks only, the most new tokens a request may ask for.
    `template`: the user's template module (a .py file or a package directory, see
    `splitserve.stages.template`), shipped in the bundle and run on sample records first.
    `max_length`: the longest input, for a model that declares none (see `onnx.max_length_of`).
    """
    from splitserve.steps import Steps

    defaults = dict(defaults or {})
    thresholds = quality_thresholds_for(quantize, quality_thresholds)
    with Steps(show_progress) as progress, tempfile.TemporaryDirectory(prefix="splitserve-export-") as tmp:
        step, done = progress.step, progress.done

        t = step(f"Loading source model {source_uri}")
        source = read_source(source_uri)
        if source.task in tasks.GONE:
            raise ExportError(tasks.GONE[source.task])
        loaded = load_source_model(source_uri, source)
        pipeline_task = loaded.task  # translation: "translation_en_to_fr" and the like
        task = tasks.lookup(pipeline_task)
        if task is None:
            raise ExportError(f"task {pipeline_task!r} is not supported yet; supported: {sorted(tasks.NAMES)}")
        artifacts = Path(tmp) / "artifacts"
        mlflow_defaults, defaults_from, options = inference_defaults(source, task)
        mlflow_defaults = {**loaded.defaults, **mlflow_defaults}  # the model's own stack below MLflow's settings
        defaults_from = {**dict.fromkeys(loaded.defaults, loaded.defaults_origin), **defaults_from}
        if source.llm_task and template is not None:
            raise ExportError(
                f"a template cannot be given for a source logged with MLflow's task={source.llm_task!r}: its pyfunc "
                "answers MLflow's fixed response schema; log the model as a plain text-generation pipeline to template it"
            )
        template_name, loaded_template, template_defaults = None, None, {}
        if template is not None:
            template_name = stage_template(Path(template), artifacts / "template")
            loaded_template = read_template(artifacts / "template", template_name, task)
            template_defaults = loaded_template.defaults
        # export --set > the source's signature > its model_config (`inference_defaults`) > the template's DEFAULTS
        defaults_from = {
            **dict.fromkeys(template_defaults, "template"),
            **defaults_from,
            **dict.fromkeys(defaults, "--set"),
        }
        defaults = {**template_defaults, **mlflow_defaults, **defaults}
        _check_arguments(task, defaults, quantize, max_new_tokens_limit)
        if task.export.parity.startswith("audio"):  # the feature extractor, no tokenizer or template
            if template is not None:
                raise ExportError(f"templates are not supported for task {task.name} yet")
            done(t, f"Loaded {type(loaded.exported).__name__} ({task.name})")
            name = bundle_name(source_uri, name, register)
            args = (defaults, tolerance, max_new_tokens_limit, register, step, done)
            return export_audio(loaded.components, task, pipeline_task, source_uri, Path(tmp), name, *args)
        if task.export.parity == "table":  # TAPAS: its own graph and parity check
            if template is not None:
                raise ExportError(f"templates are not supported for task {task.name} yet")
            done(t, f"Loaded {type(loaded.exported).__name__} ({task.name})")
            name = bundle_name(source_uri, name, register)
            return export_table(loaded, task, source_uri, Path(tmp), name, defaults, tolerance, register, step, done)
        model, tokenizer = loaded.exported, loaded.tokenizer
        notes = (
            [f"logged in {loaded.dtype}: exported in float32, the right choice on CPU"]
            if loaded.dtype != "float32"
            else []
        )
        notes += [f"{loaded.adapter['peft_type']} adapter merged into its base"] if loaded.adapter else []
        done(t, f"Loaded {type(model).__name__} ({task.name})" + "".join(f"; {n}" for n in notes))

        t = step("Exporting to ONNX")
        onnx_dir, tok_dir = artifacts / "onnx", artifacts / "tokenizer"
        family = task.export.parity if task.export.parity in ("decoder", "seq2seq") else "encoder"
        onnx_file = export_graphs(model, family, onnx_dir, task.export.outputs)
        tokenizer.save_pretrained(str(tok_dir))
        done(t, "Exported ONNX graph")

        t = step("Checking ONNX against PyTorch")
        max_length, length_from = max_length_of(tokenizer, model.config, max_length)
        generation = None
        if task.export.parity != "encoder":
            collapse = bool(options.get("collapse_whitespace", False))
            generation = generation_info(
                model, tokenizer, onnx_dir, max_new_tokens_limit, pipeline_task, task, collapse
            )
        parity = _check_parity(task, loaded.reference, tokenizer, onnx_dir, max_length, tolerance, generation)
        done(
            t,
            f"ONNX matches PyTorch (max abs diff {parity['parity_max_abs_diff']:.2e}, {parity['parity_max_scaled_diff']:.1e} of its scale); max length {max_length} from {length_from}",
        )

        int8: Quantized | None = None
        if quantize == "int8":
            t = step(
                "Quantizing to int8 (static QDQ, dynamic, then blockwise; fastest first) and checking it against fp32"
            )
            int8_dir = Path(tmp) / "int8"
            int8_dir.mkdir()
            gate = task.export.int8_gate
            texts = SAMPLE_TEXTS + QUALITY_TEXTS
            output = task.export.outputs[0]
            int8 = quantize_within_gate(
                onnx_dir / "model.onnx",
                int8_dir / "model.onnx",
                tokenizer,
                max_length,
                gate,
                output,
                texts + GATE_TEXTS,
                thresholds,
                CALIBRATION_TEXTS,
            )
            shutil.rmtree(onnx_dir)
            shutil.copytree(int8_dir, onnx_dir)
            parity.update(int8.metrics)
            done(
                t,
                f"Quantized to int8, {int8.weights} ("
                + ", ".join(f"{g} {int8.metrics[f'int8_{g}']:.4f} >= {thresholds[g]:g}" for g in gate)
                + (f"; {int8.kept_fp32} kept in fp32: {len(int8.excluded)} MatMul nodes" if int8.excluded else "")
                + f"; {int8.metrics['int8_speedup']:.2f}x fp32 here; tried: "
                + ", ".join(
                    f"{c['candidate']} ({'kept' if c.get('kept') else 'passed' if c['passed'] else 'failed'})"
                    for c in int8.reference.candidates
                )
                + ")",
            )

        if loaded.head_arrays:  # a sentence-transformers stack's Dense layers (`splitserve.core.pooling.Head`)
            np.savez(onnx_dir / DENSE_FILE, **loaded.head_arrays)
        if generation:  # the model tier takes the prompts and returns the generated ids
            model_inputs, model_outputs = ["input_ids", "attention_mask"], [OUTPUT]
            shapes = {OUTPUT: [-1, -1]}
        else:
            model_inputs, model_outputs = graph_inputs(onnx_dir / onnx_file), list(task.export.outputs)
            shapes = output_shapes(onnx_dir / onnx_file, model_outputs)
        config = ServingConfig(
            name=bundle_name(source_uri, name, register),
            task=task.name,
            source_model_uri=source_uri,
            model_inputs=model_inputs,
            model_outputs=model_outputs,
            max_length=max_length,
            output_shapes=shapes,
            id2label={int(k): v for k, v in model.config.id2label.items()} if task.export.labels else None,
            problem_type=getattr(model.config, "problem_type", None),
            source_dtype=loaded.dtype,
            adapter=loaded.adapter,
            defaults=defaults,
            quantization=quantize,
            quantization_weights=int8.weights if int8 else None,
            quantization_excluded=int8.excluded if int8 else [],
            int8_check=int8.reference if int8 else None,
            parity=parity,
            artifacts={
                "tokenizer": hash_tree(tok_dir),
                "onnx": hash_tree(onnx_dir),
                **({"template": hash_tree(artifacts / "template")} if template_name else {}),
            },
            generation=generation,
            prompt_template=source.prompt_template or loaded.prompt_template,
            defaults_from=defaults_from,
            onnx_file=onnx_file,
            template=template_name,
            vocab_size=getattr(model.config, "vocab_size", None),
            type_vocab_size=getattr(model.config, "type_vocab_size", None)
            if "token_type_ids" in model_inputs
            else None,
            llm_task=source.llm_task,
            llm_model_name=str(source.flavor.get("source_model_name") or "") if source.llm_task else None,
            head=loaded.head,
            prompts=loaded.prompts,
        )
        config.fingerprint = config.compute_fingerprint()
        (artifacts / CONFIG_FILE).write_text(config.to_json())

        if loaded_template is not None:
            t = step(f"Running template {template_name!r} on sample records")
            rows = check_template(Bundle(Path(tmp), config), loaded_template, task)
            done(t, f"Template {template_name!r} made {rows} rows from its sample records")

        t = step("Logging the serving bundle to MLflow")
        uri = _log_bundle(task, config, artifacts, register)
        done(t, f"Logged serving bundle {uri} (fingerprint {config.fingerprint})")
    return uri


def _check_arguments(task: Task, defaults: dict[str, Any], quantize: str | None, max_new_tokens_limit: int) -> None:
    task.validate_defaults(defaults)
    if (defaults.get("max_new_tokens") or 0) > max_new_tokens_limit:
        raise ExportError(
            f"default max_new_tokens={defaults['max_new_tokens']} exceeds max_new_tokens_limit={max_new_tokens_limit}"
        )
    if quantize and not task.export.int8_gate:
        gated = sorted(t.name for t in tasks.TASKS if t.export.int8_gate)
        raise ExportError(
            f"--quantize {quantize} has no quality gate for task {task.name!r} yet "
            f"(gated tasks: {gated}); export it without quantization"
        )


def _check_parity(
    task: Task,
    model: Any,
    tokenizer: Any,
    onnx_dir: Path,
    max_length: int,
    tolerance: float,
    generation: GenerationInfo | None,
) -> dict[str, float]:
    if task.export.parity == "decoder":
        return check_generation_parity(model, onnx_dir / "model.onnx", tokenizer, max_length, SAMPLE_TEXTS, tolerance)
    if task.export.parity == "seq2seq":
        assert generation is not None and generation.decoder_start_token_id is not None
        start = generation.decoder_start_token_id
        graphs = task.export.graphs
        return check_seq2seq_parity(model, onnx_dir, graphs, tokenizer, max_length, SAMPLE_TEXTS, tolerance, start)
    outputs = task.export.outputs
    token_outputs = [
        n
        for n, shape in output_shapes(onnx_dir / "model.onnx", list(outputs)).items()
        if len(shape) >= 2 and shape[1] == -1
    ]
    return check_parity(
        model, onnx_dir / "model.onnx", tokenizer, max_length, SAMPLE_TEXTS, outputs, tolerance, token_outputs
    )


def log_serving_bundle(
    task: Task,
    config: ServingConfig,
    artifacts: Path,
    register: str | None,
    step: Callable[[str], Any],
    done: Callable[[Any, str], None],
) -> str:
    """The last steps of an export whose bundle needs nothing more checked: `config` fingerprinted
    and written beside the artifacts, the bundle logged (a progress step); returns its URI."""
    config.fingerprint = config.compute_fingerprint()
    (artifacts / CONFIG_FILE).write_text(config.to_json())
    t = step("Logging the serving bundle to MLflow")
    uri = _log_bundle(task, config, artifacts, register)
    done(t, f"Logged serving bundle {uri} (fingerprint {config.fingerprint})")
    return uri


def _log_bundle(task: Task, config: ServingConfig, artifacts: Path, register: str | None) -> str:
    """Log the bundle as an MLflow pyfunc model (registered under `register`); returns its URI."""
    import mlflow

    from splitserve.mlflow_env import registered_uri

    with mlflow.start_run(run_name=f"export-{config.name}"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*input example.*")
        mlflow.log_params(
            {
                "source_model_uri": config.source_model_uri,
                "task": task.name,
                "fingerprint": config.fingerprint,
                "max_length": config.max_length,
                "quantization": config.quantization or "none",
            }
        )
        mlflow.log_metrics(config.parity)
        info = mlflow.pyfunc.log_model(
            name="bundle",
            python_model=str(Path(__file__).parent.parent / "pyfunc_model.py"),
            artifacts={
                "serving.json": str(artifacts / CONFIG_FILE),
                "tokenizer": str(artifacts / "tokenizer"),
                "onnx": str(artifacts / "onnx"),
                **({"template": str(artifacts / "template")} if config.template else {}),
            },
            code_paths=code_paths(),
            signature=llm_signature(config.llm_task)
            if config.llm_task
            else signature_for(task, config, template_params(artifacts, config, task)),
            pip_requirements=bundle_requirements(),
            registered_model_name=register,
            tags={"splitserve.fingerprint": config.fingerprint, "splitserve.task": task.name},
        )
    return registered_uri(info, register)


def template_params(artifacts: Path, config: ServingConfig, task: Task) -> tuple[Any, ...]:
    """The template's own param rows (for the signature), none without a template."""
    if config.template is None:
        return ()
    return read_template(artifacts / "template", config.template, task).params
