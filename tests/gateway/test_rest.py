"""The gateway's REST door (`rest_port`): for every task module, `POST /v1/predict` answers what
gRPC `Predict` answers (and its server-sent events what `PredictStream` streams); a templated
bundle's rows; errors with the HTTP status of the one error table and gRPC's message; health;
tokens and TLS as on the gRPC port."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import mlflow
import pytest
import requests

from splitserve import tasks
from splitserve.client import Client
from splitserve.core import errors
from splitserve.core.status import STATUS_CODES, http_status
from tests.support.stack import Stack

TEXTS = ["Angela Merkel met Emmanuel Macron in Berlin", "Élodie vit à Zürich 🗼", "Elon Musk owns Tesla"]
GREEDY = {"do_sample": False, "max_new_tokens": 8}
# Every registered task: (the source's MLflow task, tiny architecture, records, params).
CASES: dict[str, tuple[str, str, list[Any], dict[str, Any]]] = {
    "feature-extraction": ("feature-extraction", "bert", TEXTS, {"pooling": "mean", "normalize": True}),
    "text-classification": (
        "text-classification",
        "roberta",
        [{"id": "a7", "text": t, "text_pair": "Really?"} for t in TEXTS],
        {"top_k": None},
    ),
    "token-classification": ("token-classification", "bert", TEXTS, {"aggregation_strategy": "simple"}),
    "fill-mask": ("fill-mask", "bert", ["Paris is the [MASK] of France.", "[MASK] loves [MASK]."], {"top_k": 3}),
    "question-answering": (
        "question-answering",
        "bert",
        [{"question": "Where does Angela work?", "context": "Angela Merkel works for NASA in Paris."}],
        {"top_k": 2},
    ),
    "zero-shot-classification": (
        "zero-shot-classification",
        "bert",
        [{"text": TEXTS[0], "candidate_labels": ["politics", "sports"]}, TEXTS[2]],
        {"candidate_labels": "business, travel", "multi_label": True},
    ),
    "text-generation": (
        "text-generation",
        "gpt2",
        ["Angela Merkel works for", "东京"],
        {**GREEDY, "return_full_text": False},
    ),
    "text2text-generation": ("text2text-generation", "t5", TEXTS[:2], GREEDY),
    "summarization": ("summarization", "bart", TEXTS[:2], GREEDY),
    "translation": ("translation_en_to_fr", "t5", TEXTS[:2], GREEDY),
}


def events(response: requests.Response) -> list[Any]:
    """The JSON values of a server-sent event stream's `data:` lines."""
    assert response.headers["content-type"].startswith("text/event-stream")
    return [json.loads(line[6:]) for line in response.iter_lines(decode_unicode=True) if line.startswith("data: ")]


def post(stack: Stack, body: dict[str, Any], **kwargs: Any) -> requests.Response:
    return requests.post(f"{stack.rest}/v1/predict", json=body, timeout=60, **kwargs)


# The audio tasks' and table-question-answering's REST checks run in their own modules (tests/tasks/),
# on the bundles built there.
AUDIO_TASKS = {"audio-classification", "automatic-speech-recognition"}
OWN_MODULE_TASKS = AUDIO_TASKS | {"table-question-answering"}


def test_every_task_has_a_case() -> None:
    assert set(CASES) | OWN_MODULE_TASKS == {t.name for t in tasks.TASKS}


@pytest.mark.parametrize("task", sorted(CASES))
def test_rest_answers_as_grpc(tiny_bundles, task: str) -> None:
    source_task, arch, records, params = CASES[task]
    exported = tiny_bundles[(source_task, arch)]
    with Stack(exported.local_dir, gateway={"rest_port": 0}) as stack, Client(stack.gateway) as client:
        expected = client.predict(records, params=params)
        response = post(stack, {"records": records, "params": params})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["results"] == expected
        assert body["model"] == client.info()["model"] and body["fingerprint"] == client.info()["fingerprint"]
        assert int(response.headers["splitserve-model-us"]) > 0 and int(response.headers["splitserve-input-tokens"]) > 0

        streamed = list(client.stream(records, params=params))
        sse = events(post(stack, {"records": records, "params": params, "stream": True}, stream=True))
        assert sse[-1]["results"] == streamed[-1]["results"] == expected
        # The deltas' text per record (their chunking depends on timing, their sum does not).
        for source in (streamed, sse):
            texts = {}
            for event in source[:-1]:
                texts[event["id"]] = texts.get(event["id"], "") + event["text"]
            assert texts == (
                {r["id"]: r["generated"][0]["generated_text"] for r in expected} if tasks.get(task).streams else {}
            )


def test_template_rows(tiny_bundles) -> None:
    from splitserve.export import export_bundle

    source = tiny_bundles[("token-classification", "bert")].source_uri
    template = Path(__file__).resolve().parents[2] / "templates" / "ner_rows.py"
    bundle = mlflow.artifacts.download_artifacts(export_bundle(source, template=template, show_progress=False))
    records = [{"id": 1, "content": TEXTS[0], "source": "wiki"}, {"id": 2, "content": TEXTS[2]}]
    with Stack(bundle, gateway={"rest_port": 0}) as stack, Client(stack.gateway) as client:
        expected = client.predict(records)
        response = post(stack, {"records": records})
        assert response.status_code == 200, response.text
        assert response.json()["rows"] == expected and expected[0]["id"] == 1
        assert events(post(stack, {"records": records, "stream": True}, stream=True)) == [response.json()]


def test_errors_health_and_info(tiny_bundles) -> None:
    bundle = tiny_bundles[("text-classification", "bert")].local_dir
    with Stack(bundle, gateway={"rest_port": 0}) as stack, Client(stack.gateway) as client:
        bad = [{"id": "b7", "txt": "typo"}]
        with pytest.raises(grpc.RpcError) as info:
            client.predict(bad)
        response = post(stack, {"records": bad})
        assert response.status_code == 400
        assert response.json() == {"error": {"code": "INVALID_ARGUMENT", "message": info.value.details()}}
        assert "record 0 (id='b7'): unknown field(s) ['txt']" in info.value.details()
        with pytest.raises(grpc.RpcError) as info:
            client.predict(["x"], model="other")
        response = post(stack, {"records": ["x"], "model": "other"})
        assert (response.status_code, response.json()["error"]["message"]) == (404, info.value.details())
        response = post(stack, {"records": ["x"], "params": {"top_k": "many"}, "stream": True})
        assert response.status_code == 400 and "top_k" in response.json()["error"]["message"]
        for body, message in (
            ({"texts": ["x"]}, "unknown field(s) ['texts']"),
            ({"params": {}}, "field 'records' is missing"),
            ({"records": ["x"], "params": [1]}, "params must be an object"),
            ({"records": [{"audio": {"b64": "%%"}}]}, "record 0: field 'audio': 'b64' is not valid base64"),
            ({"records": [{"audio": {"url": "http://x"}}]}, 'as an object must be {"b64"'),
        ):
            response = post(stack, body)
            assert response.status_code == 400 and message in response.json()["error"]["message"], response.text
        response = requests.post(f"{stack.rest}/v1/predict", data=b"{not json", timeout=10)
        assert response.status_code == 400 and "not JSON" in response.json()["error"]["message"]
        assert requests.get(f"{stack.rest}/health/live", timeout=10).json() == {"live": True}
        assert requests.get(f"{stack.rest}/health/ready", timeout=10).status_code == 200
        assert requests.get(f"{stack.rest}/v1/info", timeout=10).json() == {**client.info(), "streams": False}


def test_http_column_of_the_error_table() -> None:
    """One HTTP status per gRPC code; the codes no error class has map too."""
    expected = {
        errors.InvalidInput: 400,
        errors.ModelNotFound: 404,
        errors.ModelNotReady: 503,
        errors.Overloaded: 429,
        errors.Unauthenticated: 401,
        errors.BundleMismatch: 409,
        errors.DeadlineExceeded: 504,
    }
    for cls, status in expected.items():
        assert STATUS_CODES[cls][1] == status == http_status(STATUS_CODES[cls][0])
    assert len({http_status(code) for code, _ in STATUS_CODES.values()}) == len({c for c, _ in STATUS_CODES.values()})
    assert http_status(grpc.StatusCode.DEADLINE_EXCEEDED) == 504 and http_status(grpc.StatusCode.UNKNOWN) == 500


def test_tls_and_tokens(tiny_bundles, tmp_path) -> None:
    from tests.tiers.test_security import _certs

    c = _certs(tmp_path)
    bundle = tiny_bundles[("text-classification", "bert")].local_dir
    gateway = {"rest_port": 0, "tls_cert": c["server.pem"], "tls_key": c["server.key"], "auth_token_file": c["tokens"]}
    with Stack(bundle, gateway=gateway) as stack:
        url = f"https://localhost:{stack.addresses['gateway-rest'].rpartition(':')[2]}"
        with pytest.raises(requests.exceptions.ConnectionError):  # no plaintext
            requests.get(f"http://{stack.addresses['gateway-rest']}/health/live", timeout=10)
        assert requests.get(f"{url}/health/ready", verify=c["ca.pem"], timeout=10).status_code == 200  # open
        body = {"records": TEXTS}
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "s3cret-one"}):
            response = requests.post(f"{url}/v1/predict", json=body, headers=headers, verify=c["ca.pem"], timeout=10)
            assert response.status_code == 401 and response.json()["error"]["code"] == "UNAUTHENTICATED"
            response = requests.get(f"{url}/v1/models", headers=headers, verify=c["ca.pem"], timeout=10)
            assert response.status_code == 401
        ok = {"authorization": "Bearer s3cret-two"}
        response = requests.post(f"{url}/v1/predict", json=body, headers=ok, verify=c["ca.pem"], timeout=10)
        assert response.status_code == 200 and [r["id"] for r in response.json()["results"]] == ["0", "1", "2"]
        with Client(stack.gateway, token="s3cret-two", tls_ca=c["ca.pem"], tls_server_name="localhost") as client:
            assert response.json()["results"] == client.predict(TEXTS)


def test_a_client_that_goes_away_cancels_the_stream() -> None:
    """The request path's stream behind the server-sent events is closed when the HTTP client
    disconnects (so the gateway cancels the model tier's generation)."""
    import asyncio
    import threading

    from gateway_svc.rest import build_app
    from protos import splitserve_pb2 as pb
    from splitserve.core.http_server import RestServer
    from splitserve.core.settings import ServerSettings

    closed, sent = threading.Event(), []

    class EndlessGateway:
        ready = True

        async def predict_stream(self, request, call):
            try:
                while True:
                    sent.append(len(sent))
                    yield pb.PredictStreamResponse(delta=pb.TextDelta(record=0, id="0", text=f" {len(sent)}"))
                    await asyncio.sleep(0.02)
            finally:
                closed.set()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = RestServer(build_app(EndlessGateway()), ServerSettings(), 0)
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    try:
        url = f"http://127.0.0.1:{server.port}/v1/predict"
        with requests.post(url, json={"records": ["x"], "stream": True}, stream=True, timeout=10) as response:
            lines = response.iter_lines(decode_unicode=True)
            assert json.loads(next(line for line in lines if line)[6:]) == {
                "record": 0,
                "id": "0",
                "text": " 1",
                "token_ids": [],
            }
        assert closed.wait(5), "the handler's stream was not closed when the client went away"
        count = len(sent)
        threading.Event().wait(0.2)
        assert len(sent) == count
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
