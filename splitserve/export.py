"""`splitserve export`: source MLflow transformers model -> ONNX -> parity check -> serving bundle.

Heavy dependencies (torch, optimum, mlflow, onnxruntime) are imported inside `export_bundle`.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from splitserve import params as params_mod
from splitserve.bundle import CONFIG_FILE, ServingConfig, hash_tree
from splitserve.errors import ExportError

# task -> (optimum's task name, the model output the stages read)
TASK_OUTPUTS = {
    "feature-extraction": ("feature-extraction", "last_hidden_state"),
    "text-classification": ("text-classification", "logits"),
    "token-classification": ("token-classification", "logits"),
}

# Texts the ONNX graph is checked on against PyTorch: scripts, emoji, odd spacing, a long one.
SAMPLE_TEXTS = [
    "Abraham Lincoln cut down a cherry tree",
    "Florida has nice beaches",
    "Élodie a visité Zürich et São Paulo en été.",
    "東京タワーに行きました。北京欢迎你",
    "I ❤️ Paris 🗼 and naïve café crème",
    "multiple    spaces\tand\nnewlines   here",
    "x",
    " ".join(["The quick brown fox jumps over the lazy dog."] * 120),
]

# Model types whose position ids start after the padding index (RoBERTa family).
PADDING_OFFSET_TYPES = {"roberta", "xlm-roberta", "camembert", "longformer", "data2vec-text", "xlm-roberta-xl"}


def max_length_of(tokenizer: Any, model_config: Any) -> int:
    candidates = []
    if 0 < getattr(tokenizer, "model_max_length", 0) < 100_000:
        candidates.append(int(tokenizer.model_max_length))
    positions = getattr(model_config, "max_position_embeddings", None)
    if positions:
        if model_config.model_type in PADDING_OFFSET_TYPES:
            positions -= (model_config.pad_token_id or 0) + 1
        candidates.append(int(positions))
    if not candidates:
        raise ExportError("cannot tell the model's maximum sequence length")
    return min(candidates)


def bundle_name(source_uri: str, name: str | None, register: str | None) -> str:
    if name:
        return name
    if register:
        return register
    if source_uri.startswith("models:/") and not source_uri.startswith("models:/m-"):
        return source_uri[len("models:/") :].split("/")[0].split("@")[0]
    return "model"


def check_parity(
    model: Any, onnx_path: Path, tokenizer: Any, max_length: int, inputs: list[str], output: str, tolerance: float
) -> dict[str, float]:
    """Run PyTorch and ONNX Runtime on the same batch; fail past `tolerance` (abs + rel)."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    enc = tokenizer(SAMPLE_TEXTS, padding=True, truncation=True, max_length=max_length, return_tensors="np")
    feeds = {n: enc[n].astype(np.int64) if n in enc else np.zeros_like(enc["input_ids"], dtype=np.int64) for n in names}
    with torch.inference_mode():
        expected = model(**{k: torch.from_numpy(v) for k, v in feeds.items()})[output].float().numpy()
    (actual,) = session.run([output], feeds)
    mask = enc["attention_mask"].astype(bool)
    if expected.ndim == 3:  # token-level outputs: compare real tokens only
        expected, actual = expected[mask], actual[mask]
    diff = np.abs(expected - actual)
    max_abs = float(diff.max())
    max_rel = float((diff / np.maximum(np.abs(expected), 1e-6)).max())
    ok = bool(np.all(diff <= tolerance + tolerance * np.abs(expected)))
    result = {"parity_max_abs_diff": max_abs, "parity_max_rel_diff": max_rel, "parity_tolerance": tolerance}
    if not ok:
        raise ExportError(
            f"ONNX output {output!r} differs from PyTorch by up to {max_abs:.3g} (tolerance {tolerance:g}); refusing to export"
        )
    return result


def signature_for(task: str, max_length: int, defaults: dict[str, Any]) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    specs = []
    for pname, (_, default) in params_mod.accepted(task).items():
        value = defaults.get(pname, default)
        if pname == "max_length":
            specs.append(ParamSpec(pname, "long", value or max_length))
        elif pname == "top_k":
            specs.append(ParamSpec(pname, "long", value))
        elif pname == "ignore_labels":
            specs.append(ParamSpec(pname, "string", value, shape=(-1,)))
        elif isinstance(value, bool):
            specs.append(ParamSpec(pname, "boolean", value))
        else:
            specs.append(ParamSpec(pname, "string", value))
    inputs = Schema(
        [
            ColSpec("string", "id", required=False),
            ColSpec("string", "content", required=False),
            ColSpec("string", "text", required=False),
            ColSpec("string", "text_pair", required=False),
        ]
    )
    return ModelSignature(inputs=inputs, params=ParamSchema(specs))


def code_paths() -> list[str]:
    """The packages the pyfunc needs, logged with the bundle so it loads where splitserve is not installed."""
    import model_svc
    import postprocess_svc
    import preprocess_svc
    import protos
    import splitserve

    return [str(Path(str(m.__file__)).parent) for m in (splitserve, protos, preprocess_svc, postprocess_svc, model_svc)]


def bundle_requirements() -> list[str]:
    from importlib.metadata import version

    names = (
        "onnxruntime",
        "transformers",
        "tokenizers",
        "numpy",
        "pandas",
        "grpcio",
        "protobuf",
        "pydantic-settings",
        "prometheus-client",
        "mlflow",
    )
    return [f"{n}=={version(n)}" for n in names]


def export_bundle(
    source_uri: str,
    name: str | None = None,
    register: str | None = None,
    tolerance: float = 1e-4,
    defaults: dict[str, Any] | None = None,
    show_progress: bool = True,
) -> str:
    """Export the source model at `source_uri` and log the serving bundle; returns its URI."""
    import mlflow
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from splitserve.mlflow_env import registered_uri

    defaults = dict(defaults or {})
    console = Console(stderr=True)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        disable=not show_progress,
    )
    with progress, tempfile.TemporaryDirectory(prefix="splitserve-export-") as tmp:

        def step(text: str) -> Any:
            return progress.add_task(text, total=1)

        def done(task_id: Any, text: str) -> None:
            progress.update(task_id, completed=1, description=f"[green]✓[/] {text}")

        t = step(f"Loading source model {source_uri}")
        components = mlflow.transformers.load_model(source_uri, return_type="components")
        task = components["task"]
        if task not in TASK_OUTPUTS:
            raise ExportError(f"task {task!r} is not supported yet; supported: {sorted(TASK_OUTPUTS)}")
        params_mod.validate_defaults(task, defaults)
        model, tokenizer = components["model"].float().eval(), components["tokenizer"]
        done(t, f"Loaded {type(model).__name__} ({task})")

        artifacts = Path(tmp) / "artifacts"
        onnx_dir, tok_dir = artifacts / "onnx", artifacts / "tokenizer"
        t = step("Exporting to ONNX with Optimum")
        optimum_task, output = TASK_OUTPUTS[task]
        raw_dir = Path(tmp) / "optimum"
        _export_onnx(model, raw_dir, optimum_task)
        onnx_dir.mkdir(parents=True)
        for f in raw_dir.iterdir():
            if f.suffix in (".onnx", ".onnx_data") or f.name.endswith(".onnx.data"):
                shutil.copy2(f, onnx_dir / f.name)
        tokenizer.save_pretrained(str(tok_dir))
        done(t, "Exported ONNX graph")

        t = step("Checking ONNX against PyTorch")
        max_length = max_length_of(tokenizer, model.config)
        parity = check_parity(model, onnx_dir / "model.onnx", tokenizer, max_length, SAMPLE_TEXTS, output, tolerance)
        done(t, f"ONNX matches PyTorch (max abs diff {parity['parity_max_abs_diff']:.2e})")

        import onnxruntime as ort

        session = ort.InferenceSession(str(onnx_dir / "model.onnx"), providers=["CPUExecutionProvider"])
        config = ServingConfig(
            name=bundle_name(source_uri, name, register),
            task=task,
            source_model_uri=source_uri,
            model_inputs=[i.name for i in session.get_inputs()],
            model_outputs=[output],
            max_length=max_length,
            id2label={int(k): v for k, v in model.config.id2label.items()} if task != "feature-extraction" else None,
            problem_type=getattr(model.config, "problem_type", None),
            defaults=defaults,
            parity=parity,
            artifacts={"tokenizer": hash_tree(tok_dir), "onnx": hash_tree(onnx_dir)},
        )
        config.fingerprint = config.compute_fingerprint()
        (artifacts / CONFIG_FILE).write_text(config.to_json())

        t = step("Logging the serving bundle to MLflow")
        with mlflow.start_run(run_name=f"export-{config.name}"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*input example.*")
            mlflow.log_params(
                {
                    "source_model_uri": source_uri,
                    "task": task,
                    "fingerprint": config.fingerprint,
                    "max_length": max_length,
                }
            )
            mlflow.log_metrics(parity)
            info = mlflow.pyfunc.log_model(
                name="bundle",
                python_model=str(Path(__file__).with_name("pyfunc_model.py")),
                artifacts={
                    "serving.json": str(artifacts / CONFIG_FILE),
                    "tokenizer": str(tok_dir),
                    "onnx": str(onnx_dir),
                },
                code_paths=code_paths(),
                signature=signature_for(task, max_length, defaults),
                pip_requirements=bundle_requirements(),
                registered_model_name=register,
                tags={"splitserve.fingerprint": config.fingerprint, "splitserve.task": task},
            )
        uri = registered_uri(info, register)
        done(t, f"Logged serving bundle {uri} (fingerprint {config.fingerprint})")
    return uri


def _export_onnx(model: Any, out_dir: Path, optimum_task: str) -> None:
    import logging
    import warnings

    from optimum.exporters.onnx import onnx_export_from_model

    logging.getLogger("optimum").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_export_from_model(model, out_dir, task=optimum_task, do_validation=False)
    if not (out_dir / "model.onnx").exists():
        raise ExportError(f"Optimum wrote no model.onnx (got {sorted(p.name for p in out_dir.iterdir())})")
