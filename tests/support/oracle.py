"""What the task tests share: the inputs every task is checked on, the tolerances, and the one
parity check against the oracle, `transformers.pipeline` on PyTorch (for the tasks transformers 5
removed, the answers its 4.57 pipeline recorded), through the gateway (real
gRPC servers of every tier) and in process. Each task's test module brings its own oracle
adapter: what the pipeline returns in splitserve's result shape, and how two results compare."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

SCORE_TOL = 1e-4
EMBED_TOL = 1e-4

LONG_TEXT = " ".join(
    f"Angela Merkel met Emmanuel Macron in Berlin on day {i}, then flew to São Paulo with Ørsted staff."
    for i in range(45)
)
TEXTS = [
    "Abraham Lincoln cut down a cherry tree",
    "Élodie vit à Zürich et mange des crêpes",
    "東京タワーに行きました。北京欢迎你",
    "I ❤️ Paris 🗼 😀",
    "multiple    spaces   and\ttabs\nnewlines",
    "Elon Musk owns Tesla",
    LONG_TEXT,  # longer than every model's max length: truncated
]

# (the pipeline, one record's input, params) -> the pipeline's output in splitserve's result shape
Expected = Callable[[Any, Any, dict[str, Any]], dict[str, Any]]
# (expected, got, where) -> None, or AssertionError
Matches = Callable[[dict[str, Any], dict[str, Any], str], None]


def close(expected: float, got: float, tol: float = SCORE_TOL) -> bool:
    return abs(float(expected) - float(got)) <= tol


def pipeline_for(exported: Any) -> Any:
    """`transformers.pipeline` of the exported model; for a task transformers 5 removed, the
    answers its 4.57 pipeline gave (`Recorded`)."""
    import transformers

    from tests.support.bundles import LOGGED_UNDER_4

    if Path(exported.model_dir).parent == LOGGED_UNDER_4:
        return Recorded(Path(exported.model_dir).name)
    return transformers.pipeline(
        exported.task, model=str(exported.model_dir), tokenizer=str(exported.model_dir), device=-1
    )


class Recorded:
    """The transformers 4.57 pipeline of a model in tests/data/transformers-4.57, as its recorded
    answers: called as the pipeline is, for the inputs and params the answers were recorded on
    (the question-answering tests' RECORDS x PARAMS)."""

    def __init__(self, model: str):
        from tests.support.bundles import LOGGED_UNDER_4

        data = json.loads((LOGGED_UNDER_4 / "expected-4.57.json").read_text())
        self.answers, self.inputs = data[model]["pipeline"], data["inputs"]

    def __call__(self, question: str, context: str, **params: Any) -> Any:
        records, params_list = self.inputs["qa_records"], self.inputs["qa_params"]
        where = {"question": question, "context": context}
        if where not in records or params not in params_list:
            raise KeyError(f"no answer was recorded under transformers 4.57 for {where} with {params}")
        return self.answers[params_list.index(params)][records.index(where)]


def check_parity(
    exported: Any,
    items: list[Any],
    params_list: list[dict[str, Any]],
    expected: Expected,
    matches: Matches,
    backend: str = "onnx",
) -> None:
    """For every params: the gateway over every tier (model tier on `backend`) and, on ONNX, the
    in-process pipeline answer each item as the pipeline does, ids and order kept."""
    from splitserve.client import Client
    from splitserve.core.bundle import load_bundle
    from splitserve.inprocess import InProcessPipeline
    from tests.support.stack import Stack

    pipe = pipeline_for(exported)
    records = [{"id": f"r{i}", **(item if isinstance(item, dict) else {"text": item})} for i, item in enumerate(items)]
    local = InProcessPipeline(load_bundle(exported.local_dir, ("tokenizer", "onnx"))) if backend == "onnx" else None
    with Stack(exported.local_dir, model={"backend": backend}) as stack, Client(stack.gateway) as client:
        for params in params_list:
            answers = {f"gateway ({backend})": client.predict(records, params=params)}
            if local is not None:
                answers["in-process"] = local.predict(records, params=params)
            for path, results in answers.items():
                assert [r["id"] for r in results] == [r["id"] for r in records], path
                for item, result in zip(items, results, strict=True):
                    where = f"{path} {exported.task}/{exported.arch} params={params} input={str(item)[:40]!r}"
                    matches(expected(pipe, item, params), result, where)


def assert_embedding(expected: Any, got: Any, where: str, tol: float = EMBED_TOL) -> None:
    exp, res = np.asarray(expected), np.asarray(got, dtype=np.float32)
    assert exp.shape == res.shape, f"{where}: shape {res.shape} != pipeline {exp.shape}"
    diff = float(np.abs(exp - res).max()) if exp.size else 0.0
    assert diff <= tol, f"{where}: embeddings differ by {diff}"


def check_pyfunc(
    exported: Any, items: list[dict[str, Any]], params: dict[str, Any], expected: Expected, matches: Matches
) -> None:
    """`mlflow.pyfunc.load_model(bundle).predict(df)` answers as the pipeline does, text stripped
    where MLflow's pyfunc strips it (`Task.mlflow_strips`): MLflow fills in
    the signature's param defaults (lists as []), the DataFrame carries the task's columns."""
    import mlflow.pyfunc
    import pandas as pd

    from splitserve import tasks

    task = tasks.get(exported.task)
    kind = task.result_kind
    pipe = pipeline_for(exported)
    frame = pd.DataFrame([{"id": f"id-{i}", **item} for i, item in enumerate(items)])
    scored = mlflow.pyfunc.load_model(exported.local_dir).predict(frame, params=params)
    assert list(scored["id"]) == list(frame["id"])
    for item, (_, row) in zip(items, scored.iterrows(), strict=True):
        want = task.as_mlflow_serves(expected(pipe, item, params))  # stripped as MLflow's pyfunc strips
        matches(want, {kind: row[kind]}, f"pyfunc {exported.task} {row['id']}")


def check_invalid_argument(
    exported: Any, good: dict[str, Any], cases: list[tuple[list[Any], dict[str, Any] | None, str]]
) -> None:
    """Bad input: INVALID_ARGUMENT through the gateway with a message naming the record and the
    field (or the param), InvalidInput with the same message in process; the servers keep serving."""
    import grpc
    import pytest

    from splitserve.client import Client
    from splitserve.core.bundle import load_bundle
    from splitserve.core.errors import InvalidInput
    from splitserve.inprocess import InProcessPipeline
    from tests.support.stack import Stack

    local = InProcessPipeline(load_bundle(exported.local_dir, ("tokenizer", "onnx")))
    with Stack(exported.local_dir) as stack, Client(stack.gateway) as client:
        for records, params, details in cases:
            with pytest.raises(grpc.RpcError) as info:
                client.predict(records, params=params)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
            assert details in info.value.details(), info.value.details()
            with pytest.raises(InvalidInput) as local_info:
                local.predict(records, params=params)
            assert details in str(local_info.value)
            assert client.predict([good])[0]["id"] == good["id"]  # ...and the servers keep serving


def rest_record(record: dict[str, Any]) -> dict[str, Any]:
    """A record as JSON: an audio file's bytes as {"b64": ...}, samples as a list."""
    audio = record["audio"]
    if isinstance(audio, bytes):
        return {**record, "audio": {"b64": base64.b64encode(audio).decode()}}
    return {**record, "audio": np.asarray(audio).tolist()}


class Generator:
    """The text2text-generation, summarization or translation pipeline transformers 5 removed,
    for a model logged under 4.x (an MLflow model folder): what it did, on the transformers 5
    runtime (the prefix, `generate` with the model's generation config updated by its
    task_specific_params for `task`, the sequence decoded with special tokens skipped)."""

    def __init__(self, logged: Path, task: str):
        import copy

        import transformers

        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(logged / "components" / "tokenizer"))
        self.model = transformers.AutoModelForSeq2SeqLM.from_pretrained(str(logged / "model")).eval()
        self.config = copy.deepcopy(self.model.generation_config)
        params = dict((getattr(self.model.config, "task_specific_params", None) or {}).get(task) or {})
        self.prefix = params.pop("prefix", "")
        self.config.update(**params)

    def __call__(self, text: str, **kwargs: Any) -> dict[str, Any]:
        """The text and the new token ids (the decoder's start token dropped) for one text."""
        import torch

        inputs = self.tokenizer(self.prefix + text, return_tensors="pt")
        inputs.pop("token_type_ids", None)  # as the 4.x pipeline did
        with torch.inference_mode():
            ids = self.model.generate(**inputs, generation_config=self.config, **{"do_sample": False, **kwargs})[0]
        text = self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return {"generated_text": text, "token_ids": [int(t) for t in ids[1:]]}
