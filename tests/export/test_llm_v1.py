"""MLflow's `llm/v1/completions` and `llm/v1/chat` tasks: a tiny random GPT-2 with a chat template,
logged with `mlflow.transformers.log_model(..., task=...)`, exported; the bundle's pyfunc (in process
and under `mlflow models serve`) answers MLflow's request and response schemas record by record as
MLflow's own pyfunc of the source does (choices' text or message, finish_reason, usage; id and
created differ by nature), and the same bundle keeps serving the gateway's OpenAI routes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import mlflow
import openai
import pandas as pd
import pytest
import transformers

from splitserve.commands.log import source_requirements
from splitserve.core.bundle import load_bundle
from tests.support.stack import Stack

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)
PROMPTS = ["Angela Merkel works for", "They cut down a cherry tree near Paris, said"]
CHATS = [
    [{"role": "user", "content": "Where does Angela work?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a tree."}],
]
TASKS = ("llm/v1/completions", "llm/v1/chat")
# Greedy (transformers 5's text-generation pipeline samples at temperature 0.7 by default, and
# MLflow's llm/v1 schemas have no do_sample field), and a default length for requests without max_tokens.
MODEL_CONFIG = {"do_sample": False, "max_new_tokens": 12}


class Sources:
    def __init__(self, model_dir: Path, sources: dict[str, str], bundles: dict[str, str]):
        self.model_dir, self.sources, self.bundles = model_dir, sources, bundles
        self._oracles: dict[str, Any] = {}
        self._pyfuncs: dict[str, Any] = {}

    def oracle(self, task: str) -> Any:
        """MLflow's own pyfunc of the source."""
        if task not in self._oracles:
            self._oracles[task] = mlflow.pyfunc.load_model(self.sources[task])
        return self._oracles[task]

    def pyfunc(self, task: str) -> Any:
        """The bundle's pyfunc."""
        if task not in self._pyfuncs:
            self._pyfuncs[task] = mlflow.pyfunc.load_model(self.bundles[task])
        return self._pyfuncs[task]


@pytest.fixture(scope="module")
def llm(mlflow_store, tmp_path_factory) -> Sources:
    from splitserve.export import export_bundle
    from tests.support.zoo.generators import save_tiny_lm

    model_dir = save_tiny_lm("gpt2", tmp_path_factory.mktemp("llm-v1"))
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(model_dir)
    pipe = transformers.pipeline("text-generation", model=str(model_dir), tokenizer=str(model_dir), device=-1)
    sources, bundles = {}, {}
    for task in TASKS:
        with mlflow.start_run():
            info = mlflow.transformers.log_model(
                pipe, name="model", task=task, model_config=MODEL_CONFIG, pip_requirements=source_requirements()
            )
        sources[task] = info.model_uri
        name = task.replace("/", "-")
        bundles[task] = mlflow.artifacts.download_artifacts(
            export_bundle(info.model_uri, name=name, show_progress=False)
        )
    return Sources(model_dir, sources, bundles)


def comparable(answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Everything but the fields that differ by nature (a fresh id, the time)."""
    return [{k: v for k, v in a.items() if k not in ("id", "created")} for a in answers]


def first_text(answer: dict[str, Any]) -> str:
    choice = answer["choices"][0]
    return choice["text"] if "text" in choice else choice["message"]["content"]


def requests_for(task: str, llm: Sources) -> list[Any]:
    """MLflow requests of every shape the schema takes: dicts with each field (or none), a DataFrame of several
    rows (the fields from its first row), a stop sequence that the greedy text reaches."""
    key, inputs = ("prompt", PROMPTS) if task == "llm/v1/completions" else ("messages", CHATS)
    requests: list[Any] = [
        {key: inputs[0], "max_tokens": 8},
        {key: inputs[1]},  # the source's model_config: 12 new tokens
        {key: inputs[1], "max_tokens": 20, "temperature": 0.7},  # the model's do_sample is false: greedy
        pd.DataFrame({key: inputs, "max_tokens": [6, 30]}),
    ]
    if task == "llm/v1/chat":
        requests.append({key: inputs[0], "max_tokens": 6, "top_p": 1.0, "top_k": 50})
    # A stop sequence the greedy text reaches (one of its new tokens, which tokenizes alone as it was
    # generated): the text ends with it, finish_reason "stop".
    tokenizer = transformers.AutoTokenizer.from_pretrained(llm.model_dir)
    pipe = transformers.pipeline("text-generation", model=str(llm.model_dir), device=-1)
    prompt = (
        inputs[1]
        if key == "prompt"
        else tokenizer.apply_chat_template(inputs[1], tokenize=False, add_generation_prompt=True)
    )
    sequence = pipe(prompt, max_new_tokens=40, do_sample=False, return_tensors=True)[0]["generated_token_ids"]
    new = sequence[len(tokenizer(prompt)["input_ids"]) :]
    words = [tokenizer.decode([t]) for t in new[2:20]]
    stop = next(
        w
        for w in words
        if w.strip() and tokenizer(w, add_special_tokens=False)["input_ids"] == [new[2 + words.index(w)]]
    )
    requests.append({key: inputs[1], "max_tokens": 40, "stop": [stop]})
    return requests


@pytest.mark.parametrize("task", TASKS)
def test_pyfunc_answers_as_mlflow(llm: Sources, task: str) -> None:
    bundle = load_bundle(llm.bundles[task])
    assert bundle.config.llm_task == task and bundle.config.llm_model_name == str(llm.model_dir)
    assert llm.pyfunc(task).metadata.signature == llm.oracle(task).metadata.signature  # MLflow's llm/v1 schemas
    requests = requests_for(task, llm)
    for request in requests:
        want = llm.oracle(task).predict(request.copy())
        got = llm.pyfunc(task).predict(request.copy())
        assert comparable(got) == comparable(want), request
        assert all(isinstance(a["id"], str) and isinstance(a["created"], int) for a in got)
    stopped = llm.pyfunc(task).predict(requests[-1])[0]
    full = llm.pyfunc(task).predict({**requests[-1], "stop": None})[0]
    assert stopped["choices"][0]["finish_reason"] == "stop" and stopped["usage"]["completion_tokens"] < 40, (
        requests[-1]["stop"],
        stopped,
        full,
    )
    assert first_text(stopped).endswith(requests[-1]["stop"][0])
    # n=1 and stream=false, which MLflow's pyfunc passes on to `generate` (refused there), change nothing.
    neutral = llm.pyfunc(task).predict({**requests[0], "n": 1, "stream": False})
    assert comparable(neutral) == comparable(llm.oracle(task).predict(requests[0].copy()))
    # temperature 0: greedy (MLflow's pyfunc raises: transformers refuses a temperature of 0)
    key = "prompt" if task == "llm/v1/completions" else "messages"
    zero = llm.pyfunc(task).predict({key: requests[0][key], "max_tokens": 8, "temperature": 0.0})
    assert comparable(zero) == comparable(llm.oracle(task).predict(requests[0].copy()))
    for bad, message in (
        ({key: requests[0][key], "n": 2}, "field 'n': only 1 is supported"),
        ({key: requests[0][key], "stream": True}, "field 'stream': only False"),
        ({"text": "hi"}, rf"missing inputs \['{key}'\]"),  # MLflow's schema enforcement
        ({key: requests[0][key], "max_tokens": 10_000}, "exceeds this model's limit"),
    ):
        with pytest.raises(mlflow.exceptions.MlflowException, match=message):
            llm.pyfunc(task).predict(bad)


def _serve(local_dir: str) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [sys.executable, "-m", "mlflow", "models", "serve", "-m", local_dir, "--env-manager", "local",
            "-h", "127.0.0.1", "-p", str(port)]  # fmt: skip
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True, env=env)
    return proc, port


def test_mlflow_models_serve_takes_mlflows_requests(llm: Sources) -> None:
    """`mlflow models serve` of each bundle, with MLflow's unified llm request (the schema's fields
    at the top level), answers what MLflow's pyfunc of the source answers; bad input is a 400."""
    import requests

    servers = {task: _serve(llm.bundles[task]) for task in TASKS}
    try:
        for task, (proc, port) in servers.items():
            deadline = time.monotonic() + 180
            while True:
                try:
                    if requests.get(f"http://127.0.0.1:{port}/ping", timeout=1).ok:
                        break
                except requests.RequestException:
                    pass
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else "exited"
                assert time.monotonic() < deadline, "mlflow models serve was not ready within 180 s"
                time.sleep(0.5)
            key, value = ("prompt", PROMPTS[1]) if task == "llm/v1/completions" else ("messages", CHATS[1])
            body = {key: value, "max_tokens": 10, "temperature": 0.5}
            response = requests.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=60)
            assert response.ok, response.text
            want = llm.oracle(task).predict(body)
            assert comparable(response.json()) == comparable(want)
            bad = requests.post(f"http://127.0.0.1:{port}/invocations", json={key: value, "n": 3}, timeout=60)
            assert bad.status_code == 400 and "field 'n'" in json.loads(bad.text)["message"]
    finally:
        for proc, _ in servers.values():
            os.killpg(proc.pid, signal.SIGTERM)
        for proc, _ in servers.values():
            proc.wait(30)


def test_the_gateway_serves_the_same_bundle_on_openai_routes(llm: Sources) -> None:
    """The llm/v1 bundles behind the gateway's OpenAI routes (and typed API): the same new text as
    MLflow's pyfunc (which strips the text's left end), the same usage (this tokenizer adds no special
    tokens), greedy at temperature 0."""
    for task in TASKS:
        with Stack(llm.bundles[task], gateway={"rest_port": 0}) as stack:
            api = openai.OpenAI(base_url=f"{stack.rest}/v1", api_key="unused", max_retries=0, timeout=60)
            model = api.models.list().data[0].id
            for i in range(2):
                if task == "llm/v1/completions":
                    want = llm.oracle(task).predict({"prompt": PROMPTS[i], "max_tokens": 9})[0]
                    got = api.completions.create(model=model, prompt=PROMPTS[i], max_tokens=9, temperature=0)
                    text = got.choices[0].text
                else:
                    want = llm.oracle(task).predict({"messages": CHATS[i], "max_tokens": 9})[0]
                    got = api.chat.completions.create(model=model, messages=CHATS[i], max_tokens=9, temperature=0)
                    text = got.choices[0].message.content
                assert text.lstrip() == first_text(want)
                assert got.choices[0].finish_reason == want["choices"][0]["finish_reason"]
                assert (
                    got.usage.model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"})
                    == want["usage"]
                )


def test_prompt_template_applies_as_in_mlflow(llm: Sources) -> None:
    """A prompt_template logged with the llm/v1 source applies to the prompt (and to the rendered
    chat) before generation, and usage counts the templated prompt, as in MLflow's pyfunc;
    `splitserve inspect` names the llm task."""
    from splitserve.commands.inspect import describe
    from splitserve.export import export_bundle

    pipe = transformers.pipeline("text-generation", model=str(llm.model_dir), device=-1)
    for task, request in (
        ("llm/v1/completions", {"prompt": PROMPTS[0], "max_tokens": 7}),
        ("llm/v1/chat", {"messages": CHATS[1], "max_tokens": 7}),
    ):
        with mlflow.start_run():
            info = mlflow.transformers.log_model(
                pipe,
                name="model",
                task=task,
                model_config=MODEL_CONFIG,
                prompt_template="Q: {prompt}\nA:",
                pip_requirements=source_requirements(),
            )
        bundle = export_bundle(info.model_uri, name="templated-" + task.replace("/", "-"), show_progress=False)
        assert describe(bundle)["llm_task"] == task
        want = mlflow.pyfunc.load_model(info.model_uri).predict(dict(request))
        got = mlflow.pyfunc.load_model(bundle).predict(dict(request))
        assert comparable(got) == comparable(want)


def test_a_tokenizer_that_adds_bos_answers_as_mlflow(mlflow_store, tmp_path) -> None:
    """A Llama whose tokenizer adds <s> to every text, with a chat template that writes <s> too: MLflow
    tokenizes the rendered chat as text (two <s>), and counts the <s> the tokenizer adds as a
    completion token; the bundle's pyfunc answers the same, completions and chat."""
    from splitserve.export import export_bundle
    from tests.support.zoo.generators import save_tiny_lm

    model_dir = save_tiny_lm("llama", tmp_path)
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir, add_bos_token=True)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(model_dir)
    assert tokenizer("hello")["input_ids"][0] == tokenizer.bos_token_id
    pipe = transformers.pipeline("text-generation", model=str(model_dir), tokenizer=str(model_dir), device=-1)
    for task, request in (
        ("llm/v1/completions", {"prompt": PROMPTS[1], "max_tokens": 9}),
        ("llm/v1/chat", {"messages": CHATS[0], "max_tokens": 9}),
    ):
        with mlflow.start_run():
            info = mlflow.transformers.log_model(
                pipe, name="model", task=task, model_config=MODEL_CONFIG, pip_requirements=source_requirements()
            )
        bundle = export_bundle(info.model_uri, name="bos-" + task.replace("/", "-"), show_progress=False)
        want = mlflow.pyfunc.load_model(info.model_uri).predict(dict(request))
        got = mlflow.pyfunc.load_model(bundle).predict(dict(request))
        assert comparable(got) == comparable(want)
        assert got[0]["usage"]["completion_tokens"] == 9 + 1  # MLflow's count: the <s> the tokenizer added
