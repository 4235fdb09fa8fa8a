"""`splitserve up`: every tier as real processes on one machine, plus the gateway.

Replicas are children of this process. Each announces its address as a JSON line on stdout
once loaded; a replica that dies is restarted on the same port (the gateway's health checks
route around it meanwhile). SIGINT/SIGTERM stop the gateway first, then the tiers, each
draining its in-flight requests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any

READY_TIMEOUT_S = 300.0


@dataclass
class Replica:
    tier: str
    argv: list[str]
    proc: subprocess.Popen[str] | None = None
    address: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)  # its ready line
    ready: threading.Event = field(default_factory=threading.Event)
    restarts: int = 0

    def start(self) -> None:
        self.ready.clear()
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, bufsize=1)
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            try:
                facts = json.loads(line)
            except ValueError:
                facts = None
            if isinstance(facts, dict) and "address" in facts and not self.ready.is_set():
                self.address, self.facts = facts["address"], facts
                self.ready.set()
            else:
                sys.stderr.write(line)

    def wait_ready(self, deadline: float) -> str:
        assert self.proc is not None
        while not self.ready.wait(0.1):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.tier} replica exited with code {self.proc.returncode} before it was ready")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.tier} replica was not ready within {READY_TIMEOUT_S:.0f}s")
        assert self.address is not None
        return self.address

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def default_model_threads(model_replicas: int) -> int:
    """Intra-op threads per model replica when every tier shares this machine's cores."""
    return max(1, (os.cpu_count() or 1) // max(1, model_replicas))


def serve_command(command: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "splitserve", command, *args]


def up(
    bundle_uri: str,
    pre: int = 1,
    model: int = 1,
    post: int = 1,
    backend: str = "onnx",
    host: str = "127.0.0.1",
    port: int = 0,
    model_args: list[str] | None = None,
    on_ready: Any = None,
    inline_stages: bool = False,
    gateway_args: list[str] | None = None,
    rest_port: int | None = 0,
) -> int:
    """Run everything until a signal; `on_ready(addresses)` runs once all are up (then stops if it returns).
    `inline_stages`: no preprocess/postprocess replicas; the gateway runs those stages itself.
    `rest_port`: the gateway's REST door (0: a free port; None: none), announced as "rest"."""
    if inline_stages:
        pre = post = 0
    if not any(a.startswith("--intra-op-threads") for a in model_args or []):
        # Replicas on one machine share its cores: split them instead of each taking all of them.
        model_args = [*(model_args or []), "--intra-op-threads", str(default_model_threads(model))]
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    tiers: dict[str, list[Replica]] = {
        "preprocess": [
            Replica("preprocess", serve_command("serve-preprocess", bundle_uri, "--host", host)) for _ in range(pre)
        ],
        "model": [
            Replica(
                "model",
                serve_command("serve-model", bundle_uri, "--host", host, "--backend", backend, *(model_args or [])),
            )
            for _ in range(model)
        ],
        "postprocess": [
            Replica("postprocess", serve_command("serve-postprocess", bundle_uri, "--host", host)) for _ in range(post)
        ],
    }
    replicas = [r for rs in tiers.values() for r in rs]
    gateway: Replica | None = None
    try:
        for r in replicas:
            r.start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        addresses: dict[str, Any] = {t: [r.wait_ready(deadline) for r in rs] for t, rs in tiers.items()}
        # Pin each replica to its port so a restart comes back where the gateway looks.
        for r in replicas:
            assert r.address is not None
            r.argv += ["--port", r.address.rpartition(":")[2]]
        gateway = Replica(
            "gateway",
            serve_command(
                "serve-gateway",
                "--host",
                host,
                "--port",
                str(port),
                "--model",
                *addresses["model"],
                *(
                    ["--inline-stages", bundle_uri]
                    if inline_stages
                    else ["--preprocess", *addresses["preprocess"], "--postprocess", *addresses["postprocess"]]
                ),
                *(["--rest-port", str(rest_port)] if rest_port is not None else []),
                *(gateway_args or []),
            ),
        )
        gateway.start()
        addresses = {"gateway": gateway.wait_ready(deadline), **addresses}
        if "rest" in gateway.facts:
            addresses = {"gateway": addresses["gateway"], "rest": gateway.facts["rest"], **addresses}
        print(json.dumps(addresses), flush=True)
        if on_ready is not None:
            return int(on_ready(addresses) or 0)
        while not stop.wait(0.5):
            for r in replicas:
                if r.proc is not None and r.proc.poll() is not None:
                    r.restarts += 1
                    print(
                        f"{r.tier} replica on {r.address} exited ({r.proc.returncode}); restarting",
                        file=sys.stderr,
                        flush=True,
                    )
                    r.start()
            if gateway.proc is not None and gateway.proc.poll() is not None:
                print(f"gateway exited ({gateway.proc.returncode}); stopping", file=sys.stderr, flush=True)
                return 1
        return 0
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        if gateway is not None:
            gateway.stop()
            gateway.wait(15)
        for r in replicas:
            r.stop()
        for r in replicas:
            r.wait(15)
        for s, handler in previous.items():
            signal.signal(s, handler)
