"""protobuf <-> plain Python/numpy for splitserve's own API (records, params, tensors, results).

The one place where `protos.splitserve_pb2` meets stage data; the model tier's OIP conversion
lives in `model_svc/codec.py`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from google.protobuf import json_format, struct_pb2

from protos import splitserve_pb2 as pb
from splitserve.records import Record
from splitserve.tensors import from_raw, to_raw


def records_to_pb(records: list[Record]) -> list[pb.Record]:
    out = []
    for r in records:
        msg = pb.Record(id=r.id, candidate_labels=r.candidate_labels)
        for name in ("text", "text_pair", "question", "context"):
            value = getattr(r, name)
            if value is not None:
                setattr(msg, name, value)
        out.append(msg)
    return out


def records_from_pb(messages: Any) -> list[Record]:
    records = []
    for i, m in enumerate(messages):
        records.append(
            Record(
                id=m.id or str(i),
                text=m.text if m.HasField("text") else None,
                text_pair=m.text_pair if m.HasField("text_pair") else None,
                question=m.question if m.HasField("question") else None,
                context=m.context if m.HasField("context") else None,
                candidate_labels=list(m.candidate_labels),
            )
        )
    return records


def params_to_struct(params: dict[str, Any] | None) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    if params:
        struct.update(params)
    return struct


def params_from_struct(struct: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(struct)


def arrays_to_tensors(arrays: dict[str, np.ndarray]) -> list[pb.Tensor]:
    tensors = []
    for name, array in arrays.items():
        datatype, shape, raw = to_raw(array)
        tensors.append(pb.Tensor(name=name, datatype=datatype, shape=shape, raw=raw))
    return tensors


def tensors_to_arrays(tensors: Any) -> dict[str, np.ndarray]:
    return {t.name: from_raw(t.name, t.datatype, list(t.shape), t.raw) for t in tensors}


def model_params_to_pb(params: dict[str, Any]) -> dict[str, pb.ModelParameter]:
    """Scalar params for the model tier (bool, int, float, str) as ModelParameter messages."""
    out = {}
    for name, value in params.items():
        if isinstance(value, bool):
            out[name] = pb.ModelParameter(bool_value=value)
        elif isinstance(value, int):
            out[name] = pb.ModelParameter(int64_value=value)
        elif isinstance(value, float):
            out[name] = pb.ModelParameter(double_value=value)
        elif isinstance(value, str):
            out[name] = pb.ModelParameter(string_value=value)
        else:
            raise TypeError(f"model parameter {name!r}: unsupported type {type(value).__name__}")
    return out


def result_to_pb(record_id: str, result: dict[str, Any]) -> pb.Result:
    if "labels" in result:
        labels = [pb.LabelScore(label=d["label"], score=d["score"]) for d in result["labels"]]
        return pb.Result(id=record_id, labels=pb.Labels(labels=labels))
    if "entities" in result:
        entities = []
        for d in result["entities"]:
            e = pb.Entity(score=d["score"], word=d["word"])
            for key in ("entity_group", "entity"):
                if key in d:
                    setattr(e, key, d[key])
            for key in ("start", "end", "index"):
                if d.get(key) is not None:
                    setattr(e, key, int(d[key]))
            entities.append(e)
        return pb.Result(id=record_id, entities=pb.Entities(entities=entities))
    if "embedding" in result:
        array = np.asarray(result["embedding"], dtype=np.float32)
        return pb.Result(id=record_id, embedding=pb.Embedding(shape=list(array.shape), values=array.ravel().tolist()))
    if "filled_masks" in result:
        # The pipeline's shape: a list of candidates for one mask, a list of such lists for several.
        fills = result["filled_masks"]
        per_mask = [fills] if fills and isinstance(fills[0], dict) else fills
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
        return pb.Result(id=record_id, filled_masks=pb.FilledMasks(masks=masks))
    if "answers" in result:
        answers = [
            pb.Answer(answer=a["answer"], score=a["score"], start=int(a["start"]), end=int(a["end"]))
            for a in result["answers"]
        ]
        return pb.Result(id=record_id, answers=pb.Answers(answers=answers))
    if "zero_shot" in result:
        z = result["zero_shot"]
        return pb.Result(
            id=record_id, zero_shot=pb.ZeroShot(sequence=z["sequence"], labels=z["labels"], scores=z["scores"])
        )
    if "generated" in result:
        texts = [
            pb.GeneratedText(generated_text=g["generated_text"], token_ids=[int(t) for t in g["token_ids"]])
            for g in result["generated"]
        ]
        return pb.Result(id=record_id, generated=pb.Generated(texts=texts))
    raise ValueError(f"unknown result kind {sorted(result)}")


def result_from_pb(result: pb.Result) -> dict[str, Any]:
    """A result as the client returns it: {"id": ..., <kind>: ...}, the kind being `labels`,
    `entities`, `embedding`, `filled_masks`, `answers`, `zero_shot` or `generated`, with the
    pipeline's shape inside (fill-mask: a list of candidates for one mask, a list of lists for
    several; text-generation: a list of {"generated_text", "token_ids"})."""
    kind = result.WhichOneof("output")
    out: dict[str, Any] = {"id": result.id}
    if kind == "labels":
        out["labels"] = [{"label": x.label, "score": x.score} for x in result.labels.labels]
    elif kind == "entities":
        entities = []
        for e in result.entities.entities:
            d: dict[str, Any] = {"entity_group": e.entity_group} if e.entity_group else {"entity": e.entity}
            d["score"] = e.score
            if e.HasField("index"):
                d["index"] = e.index
            d["word"] = e.word
            d["start"] = e.start if e.HasField("start") else None
            d["end"] = e.end if e.HasField("end") else None
            entities.append(d)
        out["entities"] = entities
    elif kind == "embedding":
        array = np.asarray(result.embedding.values, dtype=np.float32).reshape(list(result.embedding.shape))
        out["embedding"] = array.tolist()
    elif kind == "filled_masks":
        per_mask = [
            [
                {"score": c.score, "token": c.token, "token_str": c.token_str, "sequence": c.sequence}
                for c in mask.candidates
            ]
            for mask in result.filled_masks.masks
        ]
        out["filled_masks"] = per_mask[0] if len(per_mask) == 1 else per_mask
    elif kind == "answers":
        out["answers"] = [
            {"answer": a.answer, "score": a.score, "start": a.start, "end": a.end} for a in result.answers.answers
        ]
    elif kind == "zero_shot":
        z = result.zero_shot
        out["zero_shot"] = {"sequence": z.sequence, "labels": list(z.labels), "scores": list(z.scores)}
    elif kind == "generated":
        out["generated"] = [
            {"generated_text": g.generated_text, "token_ids": list(g.token_ids)} for g in result.generated.texts
        ]
    return out
