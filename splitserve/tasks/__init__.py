"""The task registry: every task splitserve serves, one module each (see `base.Task`).

Tiers, stages and programs look tasks up here (`get`, `lookup`) and map results to and from
protobuf (`result_to_pb`, `result_from_pb`); nothing outside the task modules names a task.
"""

from __future__ import annotations

from typing import Any

from protos import splitserve_pb2 as pb
from splitserve.core import codec
from splitserve.core.errors import InvalidInput
from splitserve.tasks import (
    audio_classification,
    automatic_speech_recognition,
    feature_extraction,
    fill_mask,
    generation,
    question_answering,
    table_question_answering,
    text_classification,
    token_classification,
    zero_shot_classification,
)
from splitserve.tasks.base import Task

TASKS: tuple[Task, ...] = (
    feature_extraction.TASK,
    text_classification.TASK,
    token_classification.TASK,
    fill_mask.TASK,
    question_answering.TASK,
    table_question_answering.TASK,
    zero_shot_classification.TASK,
    *generation.TASKS,
    audio_classification.TASK,
    automatic_speech_recognition.TASK,
)
NAMES = tuple(t.name for t in TASKS)
_BY_KIND = {t.result_kind: t for t in reversed(TASKS)}  # a kind's first task maps it


# Tasks that no longer exist in transformers, with what to log instead.
GONE = {
    "conversational": "task 'conversational' no longer exists in transformers (removed in 4.42); log the model as a "
    "'text-generation' pipeline instead: its chat template renders records that carry `messages`, and the gateway "
    "serves it at POST /v1/chat/completions",
}


def lookup(name: str) -> Task | None:
    """The task a pipeline/MLflow task name (or alias) means, or None."""
    return next((t for t in TASKS if t.accepts(name)), None)


def get(name: str) -> Task:
    task = lookup(name)
    if name in GONE:
        raise InvalidInput(GONE[name])
    if task is None:
        raise InvalidInput(f"task {name!r} is not supported; supported tasks: {list(NAMES)} (and translation_xx_to_yy)")
    return task


def result_to_pb(task: Task, record_id: str, result: dict[str, Any]) -> pb.Result:
    return pb.Result(id=record_id, **{task.result_kind: task.to_pb(result[task.result_kind])})


def result_from_pb(result: pb.Result) -> dict[str, Any]:
    """A result as the client returns it: {"id": ..., <kind>: ...}, with the pipeline's shape inside."""
    kind = result.WhichOneof("output")
    out: dict[str, Any] = {"id": result.id}
    if kind is not None:
        out[kind] = _BY_KIND[kind].from_pb(getattr(result, kind))
    return out


def answer_from_pb(response: pb.PredictResponse) -> list[dict[str, Any]]:
    """A gateway response's answer: a templated bundle's rows, else one typed result per record."""
    if response.rows:
        return codec.rows_from_pb(response.rows)
    return [result_from_pb(r) for r in response.results]
