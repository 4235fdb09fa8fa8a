"""The ways of serving one model the bench compares: the gateway over every tier (ONNX fp32/int8,
PyTorch, inline stages), one model-tier replica alone over OIP, in-process
`transformers.pipeline` and pyfunc, and `mlflow models serve`."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from splitserve import tasks


def embedding_params(accepted: set[str]) -> dict[str, Any] | None:
    """Sentence embeddings (mean-pooled, normalized) where the task pools; else the defaults."""
    return {"pooling": "mean", "normalize": True} if "pooling" in accepted else None


class Target:
    """Something that scores records. `processes()` names the OS processes whose CPU and memory count."""

    name = ""

    def start(self) -> None: ...

    def call(self, records: list[str]) -> None:
        raise NotImplementedError

    def stop(self) -> None: ...

    def processes(self) -> dict[str, list[int]]:
        return {"bench (in-process)": [os.getpid()]}


class GatewayTarget(Target):
    """All tiers via `splitserve up`, called through the gateway with the gRPC client."""

    def __init__(
        self,
        name: str,
        bundle_uri: str,
        backend: str,
        inline_stages: bool = False,
        device: str = "cpu",
        cache_bytes: int = 0,
    ):
        self.name, self.bundle_uri, self.backend, self.inline_stages = name, bundle_uri, backend, inline_stages
        self.device, self.cache_bytes = device, cache_bytes

    def start(self) -> None:
        from splitserve.client import Client

        argv = [sys.executable, "-m", "splitserve", "up", self.bundle_uri, "--backend", self.backend]
        argv += ["--device", self.device]
        argv += ["--inline-stages"] if self.inline_stages else []
        argv += ["--cache-bytes", str(self.cache_bytes)] if self.cache_bytes else []
        # A session of its own: the terminal's Ctrl-C reaches the bench, which stops it in order.
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            raise RuntimeError(f"{self.name}: `splitserve up` exited before it was ready")
        self.addresses = json.loads(line)
        self.client = Client(self.addresses["gateway"])
        self.params = embedding_params({p.name for p in tasks.get(self.client.info()["task"]).params})

    def call(self, records: list[str]) -> None:
        self.client.predict(records, params=self.params)

    def processes(self) -> dict[str, list[int]]:
        import psutil

        groups: dict[str, list[int]] = {}
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            try:
                cmd = " ".join(child.cmdline())
            except psutil.Error:
                continue
            match = re.search(r"splitserve serve-(\w+)", cmd)
            if match:
                groups.setdefault(match.group(1), []).append(child.pid)
        groups["client (bench)"] = [os.getpid()]
        return groups

    def stop(self) -> None:
        if getattr(self, "client", None) is not None:
            self.client.close()
        if getattr(self, "proc", None) is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class CachedGatewayTarget(GatewayTarget):
    """The gateway with its response cache on, sent a known share of repeated records: of every ten
    records, `repeated_tenths` are drawn from a few hot texts (cached once the target starts), the
    others are new (the request set's text made unique by a number: a miss), so the share of hits
    is what the name says whatever the request set's own repeats."""

    HOT = 64  # distinct repeated texts
    CACHE_BYTES = 256 * 2**20

    def __init__(self, name: str, bundle_uri: str, repeated_tenths: int, device: str = "cpu"):
        super().__init__(name, bundle_uri, "onnx", device=device, cache_bytes=self.CACHE_BYTES)
        self.repeated_tenths = repeated_tenths
        self.counter = itertools.count()  # next() on it is atomic under the GIL: one number per record

    def start(self) -> None:
        from splitserve.bench.corpus import docstring_corpus

        super().start()
        self.hot = docstring_corpus()[: self.HOT]
        for i in range(0, self.HOT, 16):  # cached before the first point: a repeat is a hit from the start
            super().call(self.hot[i : i + 16])

    def call(self, records: list[str]) -> None:
        batch = []
        for text in records:
            n = next(self.counter)
            repeated = n % 10 < self.repeated_tenths
            batch.append(self.hot[n % self.HOT] if repeated else f"{text} ({n})")
        super().call(batch)


class ModelTierTarget(Target):
    """One model-tier replica alone (`splitserve serve-model`), called over the Open Inference
    Protocol with inputs tokenized beforehand: the model tier's own throughput, ONNX vs PyTorch."""

    def __init__(
        self,
        name: str,
        bundle_uri: str,
        backend: str,
        device: str = "cpu",
        dtype: str = "logged",
        threads: int | None = None,
        pooling: str = "auto",
    ):
        self.name, self.bundle_uri, self.backend, self.device, self.dtype = name, bundle_uri, backend, device, dtype
        self.threads = threads or os.cpu_count() or 1  # intra-op threads of the one replica
        # What the model tier is asked, as the gateway asks it: "auto" (mean-pooled and normalized
        # where the task pools, as the gateway targets' requests), "mean", "cls", or "none" (token vectors).
        self.pooling = pooling

    def start(self) -> None:
        import grpc

        from protos import grpc_predict_v2_pb2_grpc as oip_grpc
        from splitserve.commands.up import READY_TIMEOUT_S, Replica, serve_command
        from splitserve.core.bundle import load_bundle
        from splitserve.core.records import Limits
        from splitserve.core.tokenizer import load_tokenizer
        from splitserve.stages.preprocess import Preprocessor

        threads = str(self.threads)
        self.replica = Replica(
            "model", serve_command("serve-model", self.bundle_uri, "--backend", self.backend), own_session=True
        )
        self.replica.argv += ["--host", "127.0.0.1", "--intra-op-threads", threads, "--log-level", "warning"]
        self.replica.argv += ["--device", self.device, "--dtype", self.dtype]
        with socket.socket() as s:  # its metrics say how much of what it ran was padding
            s.bind(("127.0.0.1", 0))
            self.metrics_port = s.getsockname()[1]
        self.replica.argv += ["--metrics-port", str(self.metrics_port)]
        self.replica.start()
        address = self.replica.wait_ready(time.monotonic() + READY_TIMEOUT_S)
        bundle = load_bundle(self.bundle_uri, ("tokenizer",))
        self.bundle = bundle
        if self.pooling == "auto":
            accepted = {p.name for p in tasks.get(bundle.config.task).params}
            self.pooling = "mean" if embedding_params(accepted) else "none"
        self.preprocessor = Preprocessor(bundle.config, load_tokenizer(bundle.tokenizer_dir), Limits(10**6, 10**9))
        self.channel = grpc.insecure_channel(address)
        self.stub = oip_grpc.GRPCInferenceServiceStub(self.channel)
        self.cache: dict[tuple[str, ...], Any] = {}

    def _request(self, records: list[str]) -> Any:
        from protos import grpc_predict_v2_pb2 as oip
        from splitserve.core.records import to_records

        key = tuple(records)
        if key not in self.cache:  # tokenize once: only the model tier's work is measured
            encoded = self.preprocessor.run(to_records(records), None)
            request = oip.ModelInferRequest(model_name=self.bundle.config.name, model_version=self.bundle.fingerprint)
            if self.pooling != "none":
                request.parameters["pooling"].string_param = self.pooling
                request.parameters["normalize"].bool_param = True
            for name, array in encoded.model_inputs.items():
                request.inputs.add(name=name, datatype="INT64", shape=list(array.shape))
                request.raw_input_contents.append(array.astype("<i8").tobytes())
            self.cache[key] = request
        return self.cache[key]

    def call(self, records: list[str]) -> None:
        self.stub.ModelInfer(self._request(records), timeout=120)

    def tokens(self) -> dict[str, float]:
        """The model tier's token positions so far: {"real": n, "padding": n}."""
        import requests

        text = requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).text
        counts = {"real": 0.0, "padding": 0.0}
        for line in text.splitlines():
            if line.startswith("splitserve_model_batch_tokens_total{"):
                kind = line.split('kind="', 1)[1].split('"', 1)[0]
                counts[kind] = float(line.rsplit(" ", 1)[1])
        return counts

    def processes(self) -> dict[str, list[int]]:
        assert self.replica.proc is not None
        return {"model": [self.replica.proc.pid], "client (bench)": [os.getpid()]}

    def stop(self) -> None:
        if getattr(self, "channel", None) is not None:
            self.channel.close()
        if getattr(self, "replica", None) is not None:
            self.replica.stop()
            self.replica.wait(30)


class PipelineTarget(Target):
    """`transformers.pipeline` on PyTorch in this process: what a notebook user runs."""

    def __init__(self, name: str, source_uri: str):
        self.name, self.source_uri = name, source_uri

    def start(self) -> None:
        import mlflow.transformers

        self.pipe = mlflow.transformers.load_model(self.source_uri)
        self.kwargs: dict[str, Any] = {"truncation": True}
        self.lock = threading.Lock()  # a pipeline object is not safe to share across threads

    def call(self, records: list[str]) -> None:
        with self.lock:
            self.pipe(records, batch_size=len(records), **self.kwargs)


class PyfuncTarget(Target):
    """The serving bundle's pyfunc in this process: the split stages with no transport."""

    def __init__(self, name: str, bundle_uri: str):
        self.name, self.bundle_uri = name, bundle_uri

    def start(self) -> None:
        import mlflow.pyfunc

        self.model = mlflow.pyfunc.load_model(self.bundle_uri)
        schema = self.model.metadata.get_params_schema()
        self.params = embedding_params({p.name for p in schema.params} if schema else set())

    def call(self, records: list[str]) -> None:
        self.model.predict(records, params=self.params)


class MlflowServeTarget(Target):
    """`mlflow models serve` of the source model (REST scoring server), over HTTP."""

    def __init__(self, name: str, source_uri: str):
        self.name, self.source_uri = name, source_uri

    def start(self) -> None:
        import requests

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        argv = [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            self.source_uri,
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ]
        # mlflow execs `uvicorn` from PATH: make it this interpreter's, even when the venv is not activated.
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env
        )
        self.url = f"http://127.0.0.1:{port}/invocations"
        self.session = requests.Session()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/ping", timeout=1).ok:
                    return
            except requests.RequestException:
                time.sleep(0.5)
            if self.proc.poll() is not None:
                raise RuntimeError("mlflow models serve exited before it was ready")
        raise RuntimeError("mlflow models serve was not ready within 180 s")

    def call(self, records: list[str]) -> None:
        response = self.session.post(self.url, json={"inputs": records}, timeout=120)
        response.raise_for_status()

    def processes(self) -> dict[str, list[int]]:
        import psutil

        return {
            "mlflow serve": [self.proc.pid, *(c.pid for c in psutil.Process(self.proc.pid).children(recursive=True))]
        }

    def stop(self) -> None:
        if getattr(self, "proc", None) is None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
