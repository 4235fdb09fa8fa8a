"""Load for tests/cli/test_ray_cluster.py, run on the client host:
`python tests/support/ray_load.py TARGET SECONDS CONCURRENCY [REST_URL]`.

Every text once first (the answers to hold the others to), then `{"phase": "warm"}`; then
closed-loop requests of two records each for SECONDS, or until a line arrives on stdin: gRPC
through Serve's gRPC proxy (`splitserve.client`, which retries UNAVAILABLE), and with REST_URL one
worker of the CONCURRENCY posting to /v1/predict through Serve's HTTP proxy instead (retrying a 503
as the client retries UNAVAILABLE; each retry counted). Each answer is checked against the
warm-up's (ids in order, vectors within 1e-4); then one JSON line: requests, lost (failed with any
status), wrong (answered, but not as in the warm-up), rest_requests and rest_retried, the failures'
codes (REST ones as the gRPC code of their HTTP status, else `HTTP <status>`), each failure (its
time.time(), code and details) and the slowest request."""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.request

import checked_load  # the sibling module: this file runs as a script

from splitserve.client import Client

TEXTS = checked_load.texts(32)
HTTP_CODES = {503: "UNAVAILABLE", 429: "RESOURCE_EXHAUSTED", 504: "DEADLINE_EXCEEDED", 408: "DEADLINE_EXCEEDED"}
RETRY_WINDOW_S = 30.0


class Rest:
    """POST /v1/predict, retrying 503 (UNAVAILABLE's status) within RETRY_WINDOW_S, as the Python
    client retries UNAVAILABLE; `retried` counts the retries."""

    def __init__(self, url: str):
        self.url, self.requests, self.retried = url.rstrip("/") + "/v1/predict", 0, 0

    def predict(self, records: list[dict], params: dict) -> list[dict]:
        self.requests += 1
        body = json.dumps({"records": records, "params": params}).encode()
        give_up, pause = time.monotonic() + RETRY_WINDOW_S, 0.1
        while True:
            request = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=RETRY_WINDOW_S) as answer:
                    return json.loads(answer.read())["results"]
            except urllib.error.HTTPError as exc:
                if exc.code != 503 or time.monotonic() + pause > give_up:
                    code = HTTP_CODES.get(exc.code, f"HTTP {exc.code}")
                    raise RestFailure(code, exc.read().decode(errors="replace")) from None
            except (TimeoutError, urllib.error.URLError) as exc:  # no answer: past the deadline, or no proxy
                timed_out = isinstance(getattr(exc, "reason", exc), TimeoutError)
                raise RestFailure("DEADLINE_EXCEEDED" if timed_out else "HTTP connection", str(exc)) from None
            self.retried += 1
            time.sleep(pause)
            pause = min(pause * 2, 2.0)


class RestFailure(Exception):
    def __init__(self, code: str, details: str):
        super().__init__(details)
        self.code = code


def main(target: str, seconds: float, concurrency: int, rest_url: str = "") -> None:
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    rest = Rest(rest_url) if rest_url else None

    def client_for(worker: int, grpc_client: Client) -> Rest | Client:
        return rest if rest is not None and worker == 0 else grpc_client

    report = checked_load.run(target, seconds, concurrency, TEXTS, stop, client_for)
    report["rest_requests"], report["rest_retried"] = (rest.requests, rest.retried) if rest else (0, 0)
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:5])
