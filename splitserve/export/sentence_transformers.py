"""Models logged with MLflow's `sentence_transformers` flavor, as a feature-extraction source.

A SentenceTransformer is a module stack; export honours the stacks that the feature-extraction
task computes exactly, and refuses the others naming the module or setting:

- `Transformer`: the transformers model and its tokenizer, truncating at the stack's
  `max_seq_length` (the bundle's max length); exported to ONNX (token vectors out);
- `Pooling`: any one of its modes (mean, cls, max, lasttoken, mean_sqrt_len_tokens, weightedmean:
  the bundle's `pooling` default; the model tier pools), with the prompt's tokens included
  (`include_prompt`);
- `Dense` layers (identity, tanh, ReLU or sigmoid) and a final `Normalize`: the bundle's head
  (`splitserve.core.pooling.Head`; the Dense weights in onnx/dense.npz), which the model tier
  applies to every pooled vector, in numpy, after pooling;
- `truncate_dim`: the bundle's default `dimensions`; as `encode` does, the vectors are cut after
  the stack (after its Normalize) and not renormalized unless a request asks `normalize`
  (encode's `normalize_embeddings`); the bundle's `normalize` default is true for a stack ending
  in Normalize without truncate_dim (the same vectors);
- `default_prompt_name`: its prompt prefixes every text (the bundle's prompt template); its
  `prompts` are the bundle's, which a request picks with `prompt_name` (encode's).

What `SentenceTransformer.encode` (and MLflow's pyfunc of the source) answers is then what the
bundle answers: one vector per text. A CrossEncoder is refused (MLflow loads it back without its
classifier: `refuse_cross_encoder`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from splitserve.core.errors import ExportError
from splitserve.core.pooling import ACTIVATIONS, POOLINGS
from splitserve.export.source import SourceModel

FLAVOR = "sentence_transformers"
ALLOWED = ("Transformer", "Pooling", "Dense", "Normalize")
EMBEDDING = "sentence_embedding"  # the feature the Dense and Normalize modules must read and write
# encode's keyword arguments that MLflow's pyfunc passes from the signature's params, as the task's params.
ENCODE_PARAMS = {"prompt_name": "prompt_name", "normalize_embeddings": "normalize", "truncate_dim": "dimensions"}


def encode_defaults(signature: dict[str, Any]) -> dict[str, Any]:
    """The source's signature param defaults (which MLflow's pyfunc passes to encode) as the task's
    params; others keep their names (and are refused naming them, unless they change nothing). A
    truncate_dim there cuts without rescaling, as encode's normalize_embeddings=False does."""
    defaults = {ENCODE_PARAMS.get(k, k): v for k, v in signature.items() if v is not None}
    if defaults.get("dimensions") is not None:
        defaults.setdefault("normalize", False)
    return defaults


def refuse_cross_encoder(flavor: dict[str, Any]) -> None:
    """A CrossEncoder logged with this flavor: MLflow saves it, but loads it back as a
    SentenceTransformer without its classifier head (its pyfunc answers the encoder's mean-pooled
    embeddings, not the pairs' scores); refused, naming the way that serves it."""
    model_type = str(flavor.get("pipeline_model_type") or "")
    if model_type.endswith("ForSequenceClassification"):
        raise ExportError(
            f"the source model is a CrossEncoder ({model_type}) logged with MLflow's sentence_transformers flavor, "
            "which loads it back as a SentenceTransformer without its classifier (MLflow's pyfunc answers "
            "embeddings, not the pairs' scores); log it as a transformers text-classification pipeline instead "
            "(mlflow.transformers.log_model({'model': ce.model, 'tokenizer': ce.tokenizer}, "
            "task='text-classification'), or `splitserve log --task text-classification`): the gateway's rerank "
            "and score routes then answer as CrossEncoder.predict does"
        )


def load_sentence_transformer(source_uri: str) -> SourceModel:
    import mlflow.sentence_transformers

    try:
        st = mlflow.sentence_transformers.load_model(source_uri)
    except Exception as exc:  # noqa: BLE001 - one clear line instead of MLflow's traceback
        raise ExportError(f"cannot load the source model {source_uri!r}: {type(exc).__name__}: {exc}") from None
    modules = [type(m).__name__ for m in st]
    unknown = [name for name in modules if name not in ALLOWED]
    after = modules[2:-1] if modules[-1:] == ["Normalize"] else modules[2:]
    if unknown or modules[:2] != ["Transformer", "Pooling"] or set(after) - {"Dense"}:
        raise ExportError(
            f"the sentence-transformers model's modules are {modules}; splitserve serves Transformer, Pooling, "
            f"Dense layers and a final Normalize, in that order{f', not {unknown}' if unknown else ''}"
        )
    pooling = st[1].get_config_dict()
    if pooling.get("pooling_mode") not in POOLINGS:
        raise ExportError(
            f"the sentence-transformers model pools with {pooling.get('pooling_mode')!r}; splitserve pools with "
            f"one of {list(POOLINGS)} (not several concatenated)"
        )
    head, weights = _head(st, modules)
    width = head["dense"][-1]["out"] if head["dense"] else int(st[1].embedding_dimension)
    truncate_dim = getattr(st, "truncate_dim", None)
    if truncate_dim is not None and not 0 < truncate_dim <= width:
        raise ExportError(f"the sentence-transformers model's truncate_dim is {truncate_dim}; its vectors have {width}")
    prompt = (st.prompts or {}).get(st.default_prompt_name or "", "")
    if prompt and not pooling.get("include_prompt", True):
        raise ExportError(
            "the sentence-transformers model pools without its prompt's tokens (include_prompt=False), which "
            "splitserve does not do; log it with include_prompt=True or without a default prompt"
        )
    model = st[0].auto_model.float().eval()
    tokenizer = st.tokenizer
    tokenizer.model_max_length = int(st.max_seq_length)  # where encode truncates
    return SourceModel(
        exported=model,
        reference=model,
        tokenizer=tokenizer,
        task="feature-extraction",
        dtype=str(next(st.parameters()).dtype).removeprefix("torch."),
        adapter=None,
        components={"model": model, "tokenizer": tokenizer},
        # encode's normalize_embeddings=False: the stack's Normalize is the head's; with truncate_dim the
        # cut vectors keep the full vector's scale unless a request asks `normalize`.
        defaults={
            "pooling": pooling["pooling_mode"],
            "normalize": head["normalize"] and truncate_dim is None,
            **({"dimensions": int(truncate_dim)} if truncate_dim is not None else {}),
        },
        defaults_origin="sentence-transformers",
        prompt_template=f"{prompt}{{prompt}}" if prompt else None,
        prompts=dict(st.prompts or {}) if pooling.get("include_prompt", True) else {},
        head=head if head["dense"] or head["normalize"] else None,
        head_arrays=weights,
    )


def _head(st: Any, modules: list[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The stack's modules after Pooling as the bundle's head (serving.json's `head`) and the Dense
    layers' weights (onnx/dense.npz's arrays); ExportError naming a layer it cannot compute."""
    dense: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    for position, module in enumerate(st):
        if position < 2:
            continue
        names = (getattr(module, "module_input_name", EMBEDDING), getattr(module, "module_output_name", EMBEDDING))
        if names != (EMBEDDING, EMBEDDING):
            raise ExportError(
                f"the sentence-transformers model's module {position} ({modules[position]}) maps {names[0]!r} to "
                f"{names[1]!r}; splitserve applies Dense and Normalize to the {EMBEDDING!r} only"
            )
        if modules[position] != "Dense":
            continue
        activation = type(module.activation_function).__name__.lower()
        if activation not in ACTIVATIONS or getattr(module, "use_residual", False):
            what = "a residual connection" if activation in ACTIVATIONS else f"activation {activation!r}"
            raise ExportError(
                f"the sentence-transformers model's Dense layer (module {position}) has {what}; splitserve's Dense "
                f"layers take activations {sorted(ACTIVATIONS)}, without residual connections"
            )
        i = len(dense)
        arrays[f"weight_{i}"] = module.linear.weight.detach().float().cpu().numpy()
        if module.linear.bias is not None:
            arrays[f"bias_{i}"] = module.linear.bias.detach().float().cpu().numpy()
        dense.append({"activation": activation, "in": module.in_features, "out": module.out_features})
    return {"dense": dense, "normalize": modules[-1] == "Normalize"}, arrays
