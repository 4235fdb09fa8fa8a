"""fill-mask: logits at the mask positions -> top-k tokens, as transformers' pipeline decodes them.

One row per record; every record must keep at least one mask token. One mask gives a list of
candidates, several a list per mask (the pipeline's shapes).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from protos import splitserve_pb2 as pb
from splitserve.core import params as P
from splitserve.core.errors import InvalidInput, record_label
from splitserve.core.records import Record
from splitserve.tasks.base import TRUNCATION, Assets, Batch, Encoded, ExportFacts, Task, softmax, truncated_ids

log = logging.getLogger("splitserve.fill_mask")


def _targets(name: str, value: Any) -> list[str] | None:
    """`targets`: a string or a list of strings; an empty list means none (the default in the
    bundle's MLflow signature, which cannot say None for a list)."""
    if value is None:
        return None
    targets = [value] if isinstance(value, str) else P.string_list(name, value)
    return targets or None


def target_ids(tokenizer: Any, targets: list[str]) -> np.ndarray:
    """The pipeline's `get_target_ids`: each target's id in the vocabulary, else the first token
    it tokenizes to (with a warning); duplicates dropped, in the pipeline's (set) order."""
    vocab = tokenizer.get_vocab()
    ids = []
    for target in targets:
        id_ = vocab.get(target)
        if id_ is None:
            input_ids = tokenizer(
                target,
                add_special_tokens=False,
                return_attention_mask=False,
                return_token_type_ids=False,
                max_length=1,
                truncation=True,
            )["input_ids"]
            if len(input_ids) == 0:
                log.warning("target %r is not in the vocabulary and tokenizes to nothing; ignoring it", target)
                continue
            id_ = input_ids[0]
            log.warning("target %r is not in the vocabulary; using %r", target, tokenizer.convert_ids_to_tokens(id_))
        ids.append(id_)
    unique = list(set(ids))
    if not unique:
        raise InvalidInput(f"param 'targets': none of {targets} is a token of the model's vocabulary")
    return np.array(unique)


def decode_masks(
    logits: np.ndarray, input_ids: np.ndarray, tokenizer: Any, top_k: int, targets: np.ndarray | None = None
) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
    """One record's [tokens, vocab] logits and [tokens] ids (padding removed) -> the pipeline's
    output: [{score, token, token_str, sequence}] for one mask, a list of such lists for several
    (then each sequence keeps the special tokens and the other masks, as the pipeline's does)."""
    if targets is not None and targets.shape[0] < top_k:
        top_k = targets.shape[0]
    masked_index = np.nonzero(input_ids == tokenizer.mask_token_id)[0]
    probs = softmax(logits[masked_index].astype(np.float32))
    if targets is not None:
        probs = probs[..., targets]
    top_k = min(top_k, probs.shape[-1])
    predictions = np.argsort(-probs, axis=-1, kind="stable")[:, :top_k]
    values = np.take_along_axis(probs, predictions, axis=-1)
    single_mask = len(masked_index) == 1
    result = []
    for i, (row_values, row_predictions) in enumerate(zip(values.tolist(), predictions.tolist(), strict=True)):
        row = []
        for score, p in zip(row_values, row_predictions, strict=True):
            token = int(targets[p]) if targets is not None else int(p)
            tokens = input_ids.copy()
            tokens[masked_index[i]] = token
            tokens = tokens[np.where(tokens != tokenizer.pad_token_id)]
            sequence = tokenizer.decode(tokens, skip_special_tokens=single_mask)
            row.append({"score": score, "token": token, "token_str": tokenizer.decode([token]), "sequence": sequence})
        result.append(row)
    return result[0] if single_mask else result


class FillMask(Task):
    name = "fill-mask"
    params = (
        *TRUNCATION,
        P.Param("top_k", P.positive_int, 5, "long"),
        P.Param("targets", _targets, None, "string_list"),
    )
    result_kind = "filled_masks"
    mlflow_strips = ("token_str",)
    example = [{"score": 0.41, "token": 3007, "token_str": "capital", "sequence": "paris is the capital of france."}]
    decodes_tokens = True
    export = ExportFacts(("logits",))

    def encode(self, assets: Assets, records: list[Record], p: dict[str, Any]) -> Encoded:
        tok = assets.tokenizer
        if tok.mask_token_id is None:
            raise RuntimeError("the bundle's tokenizer defines no mask token")
        enc = assets.encode(
            [assets.prompted(r.text or "") for r in records], truncation=p["truncation"], max_length=p["max_length"]
        )
        if not p["truncation"]:
            assets.check_lengths(enc, records)
        ids = enc["input_ids"].astype(np.int64)
        for i, record in enumerate(records):
            if not (ids[i] == tok.mask_token_id).any():
                where = record_label(i, record.id)
                if tok.mask_token in (record.text or ""):
                    raise InvalidInput(
                        f"{where}: field 'text' has its mask token {tok.mask_token!r} past the first "
                        f"{p['max_length']} tokens, where it is truncated"
                    )
                raise InvalidInput(f"{where}: field 'text' has no mask token {tok.mask_token!r}")
        context = {"input_ids": ids, "attention_mask": enc["attention_mask"].astype(np.int64)}
        return Encoded(model_inputs=assets.model_inputs(enc), context=context, truncated=truncated_ids(enc, records))

    def decode(self, assets: Assets, batch: Batch, p: dict[str, Any]) -> list[dict[str, Any]]:
        logits = batch.output(assets.config.model_outputs[0])
        mask, ids = batch.ctx("attention_mask"), batch.ctx("input_ids")
        targets = target_ids(assets.tokenizer, p["targets"]) if p["targets"] else None
        results = []
        for i in range(len(batch.records)):
            keep = mask[i].astype(bool)
            fills = decode_masks(logits[i][: len(keep)][keep], ids[i][keep], assets.tokenizer, p["top_k"], targets)
            results.append({"filled_masks": fills})
        return results

    def to_pb(self, value: Any) -> pb.FilledMasks:
        per_mask = [value] if value and isinstance(value[0], dict) else value
        masks = [
            pb.MaskCandidates(
                candidates=[
                    pb.MaskFill(
                        score=c["score"], token=int(c["token"]), token_str=c["token_str"], sequence=c["sequence"]
                    )
                    for c in candidates
                ]
            )
            for candidates in per_mask
        ]
        return pb.FilledMasks(masks=masks)

    def from_pb(self, message: pb.FilledMasks) -> Any:
        per_mask = [
            [
                {"score": c.score, "token": c.token, "token_str": c.token_str, "sequence": c.sequence}
                for c in m.candidates
            ]
            for m in message.masks
        ]
        return per_mask[0] if len(per_mask) == 1 else per_mask


TASK = FillMask()
