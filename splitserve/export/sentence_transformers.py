"""Models logged with MLflow's `sentence_transformers` flavor, as a feature-extraction source.

A SentenceTransformer is a module stack; export honours the stacks that the feature-extraction
task computes exactly, and refuses the others naming the module or setting:

- `Transformer`: the transformers model and its tokenizer, truncating at the stack's
  `max_seq_length` (the bundle's max length);
- `Pooling`: mean or cls (the bundle's `pooling` default; the model tier pools), with the prompt's
  tokens included (`include_prompt`);
- `Normalize`: the bundle's `normalize` default;
- `default_prompt_name`: its prompt prefixes every text (the bundle's prompt template).

What `SentenceTransformer.encode` (and MLflow's pyfunc of the source) answers is then what the
bundle answers: one vector per text. Dense layers, other poolings and `truncate_dim` are refused,
and so is a CrossEncoder (MLflow loads it back without its classifier: `refuse_cross_encoder`).
"""

from __future__ import annotations

from typing import Any

from splitserve.core.errors import ExportError
from splitserve.export.source import SourceModel

FLAVOR = "sentence_transformers"
ALLOWED = ("Transformer", "Pooling", "Normalize")


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
    if unknown or modules[:2] != ["Transformer", "Pooling"]:
        raise ExportError(
            f"the sentence-transformers model's modules are {modules}; splitserve serves Transformer, Pooling "
            f"(mean or cls) and an optional Normalize{f', not {unknown}' if unknown else ''}"
        )
    pooling = st[1].get_config_dict()
    if pooling.get("pooling_mode") not in ("mean", "cls"):
        raise ExportError(
            f"the sentence-transformers model pools with {pooling.get('pooling_mode')!r}; splitserve pools with "
            "mean or cls"
        )
    if getattr(st, "truncate_dim", None):
        raise ExportError(
            f"the sentence-transformers model truncates its embeddings to {st.truncate_dim} dimensions "
            "(truncate_dim), which splitserve does not do yet; log it without truncate_dim"
        )
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
        defaults={"pooling": pooling["pooling_mode"], "normalize": modules[-1] == "Normalize"},
        defaults_origin="sentence-transformers",
        prompt_template=f"{prompt}{{prompt}}" if prompt else None,
    )
