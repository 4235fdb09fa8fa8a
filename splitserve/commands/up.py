"""`splitserve up`: every tier as real processes on one machine, plus the gateway.

Replicas are children of this process. Each announces its address as a JSON line on stdout
once loaded; a replica that dies, the gateway included, is restarted on the same port (the
gateway's health checks route around a dead tier replica meanwhile), after a pause that doubles
while it keeps dying young (0.5 s up to 30 s). SIGINT/SIGTERM stop the gateway first, then the
tiers, each draining its in-flight requests. The gateway reaches the tiers over Unix-domain sockets
in a private temporary folder (removed at the end; `tier_transport="tcp"`: loopback TCP on `host`
instead); its own ports, for clients, are TCP. With `tier_mtls`, the tiers serve mutual TLS and
accept only the gateway's certificate (made for this run in a private temporary folder).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from splitserve import certs
from splitserve.core.settings import MAX_SOCKET_PATH

READY_TIMEOUT_S = 300.0
BACKOFF_S = (0.5, 30.0)  # the first and the longest pause before restarting a dead replica
MODEL_NICENESS = 5
STABLE_S = 60.0  # a replica that ran this long before dying is restarted after the shortest pause


@dataclass
class Replica:
    tier: str
    argv: list[str]
    proc: subprocess.Popen[str] | None = None
    address: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)  # its ready line
    ready: threading.Event = field(default_factory=threading.Event)
    restarts: int = 0
    started: float = 0.0
    backoff: float = 0.0  # the pause before the next restart
    restart_at: float | None = None  # when a dead replica is due to start again
    own_session: bool = False  # out of the caller's process group (a terminal's Ctrl-C does not reach it)

    def start(self) -> None:
        self.ready.clear()
        self.restart_at = None
        self.started = time.monotonic()
        # On one machine the model tier's inference takes every core it is given; a lower priority
        # keeps the gateway and the CPU tiers (admission, health, refusals) answering at once.
        niceness = MODEL_NICENESS if self.tier == "model" else 0
        self.proc = subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            preexec_fn=(lambda: os.nice(niceness)) if niceness else None,  # noqa: PLW1509 - no threads run it
            start_new_session=self.own_session,
        )
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def pin_port(self) -> None:
        """Restart where it listens now, so that a restart comes back where callers look (a
        Unix-domain socket's path is in its argv already)."""
        assert self.address is not None
        if self.address.startswith("unix:"):
            return
        if "--port" in self.argv:
            i = self.argv.index("--port")
            del self.argv[i : i + 2]
        self.argv += ["--port", self.address.rpartition(":")[2]]

    def supervise(self, now: float) -> None:
        """Restart a dead replica once its pause is over; the pause doubles while it dies young."""
        if self.proc is None or self.proc.poll() is None:
            return
        if self.restart_at is None:
            young = now - self.started < STABLE_S
            self.backoff = min(self.backoff * 2, BACKOFF_S[1]) if young and self.backoff else BACKOFF_S[0]
            self.restart_at = now + self.backoff
            print(
                f"{self.tier} replica on {self.address} exited ({self.proc.returncode}); "
                f"restarting in {self.backoff:.1f}s",
                file=sys.stderr,
                flush=True,
            )
        elif now >= self.restart_at:
            self.restarts += 1
            self.start()

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


def default_model_replicas() -> int:
    """Model replicas when `up` is not told: one per core with one intra-op thread each, up to 4.
    Measured on 2 cores (MiniLM, 16 x 8): two 1-thread replicas serve 5-20% more than one 2-thread
    replica (ONNX Runtime's intra-op parallelism on small batches costs more than it gives). A
    model too big to hold twice: `--replicas model=1 --intra-op-threads N`."""
    return max(1, min(os.cpu_count() or 1, 4))


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
    tier_mtls: bool = False,
    tier_args: list[str] | None = None,
    tier_transport: str = "unix",
) -> int:
    """Run everything until a signal; `on_ready(addresses)` runs once all are up (then stops if it returns).
    `inline_stages`: no preprocess/postprocess replicas; the gateway runs those stages itself.
    `rest_port`: the gateway's REST door (0: a free port; None: none), announced as "rest".
    `tier_mtls`: mutual TLS between the gateway and the tiers. `tier_args`: more flags for every
    preprocess, model and postprocess replica (e.g. --watch-alias). `tier_transport`: "unix" (the
    tiers listen on Unix-domain sockets, one folder per run) or "tcp" (on `host`)."""
    if inline_stages:
        pre = post = 0
    if not any(a.startswith("--intra-op-threads") for a in model_args or []):
        # Replicas on one machine share its cores: split them instead of each taking all of them.
        model_args = [*(model_args or []), "--intra-op-threads", str(default_model_threads(model))]
    if not any(a.startswith("--parallel-batches") for a in model_args or []):
        # The replicas are the parallel batches; each runs a lone batch on every core (--idle-threads).
        model_args = [*(model_args or []), "--parallel-batches", "1"]
    tls_dir = tempfile.TemporaryDirectory(prefix="splitserve-mtls-") if tier_mtls else None
    tier_tls: list[str] = list(tier_args or [])
    if tls_dir is not None:
        paths = certs.make_mtls(Path(tls_dir.name), [host])
        tier_tls, gateway_args = (
            [*tier_tls, *certs.tier_flags(paths)],
            [*(gateway_args or []), *certs.gateway_flags(paths)],
        )
        # The name the tiers' certificate is checked against: with several replicas of a tier, the
        # channel's target lists them all and names no host, so it is given (the certificate names
        # localhost on loopback).
        loopback = host in ("127.0.0.1", "localhost", "::1")
        gateway_args += ["--tier-tls-server-name", "localhost" if loopback else host]
    # In TMPDIR, or /tmp where TMPDIR is too long for a socket path (MAX_SOCKET_PATH).
    short = len(os.fsencode(tempfile.gettempdir())) > MAX_SOCKET_PATH - 48
    sockets = (
        tempfile.mkdtemp(prefix="splitserve-up-", dir="/tmp" if short else None) if tier_transport == "unix" else None
    )

    def listen(tier: str, i: int) -> list[str]:
        return ["--host", f"unix:{sockets}/{tier}-{i}.sock" if sockets else host]

    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    tiers: dict[str, list[Replica]] = {
        "preprocess": [
            Replica("preprocess", serve_command("serve-preprocess", bundle_uri, *listen("preprocess", i), *tier_tls))
            for i in range(pre)
        ],
        "model": [
            Replica(
                "model",
                serve_command(
                    "serve-model",
                    bundle_uri,
                    *listen("model", i),
                    "--backend",
                    backend,
                    *(model_args or []),
                    *tier_tls,
                ),
            )
            for i in range(model)
        ],
        "postprocess": [
            Replica("postprocess", serve_command("serve-postprocess", bundle_uri, *listen("postprocess", i), *tier_tls))
            for i in range(post)
        ],
    }
    replicas = [r for rs in tiers.values() for r in rs]
    gateway: Replica | None = None
    try:
        for r in replicas:
            r.start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        addresses: dict[str, Any] = {t: [r.wait_ready(deadline) for r in rs] for t, rs in tiers.items()}
        for r in replicas:
            r.pin_port()
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
        gateway.pin_port()
        print(json.dumps(addresses), flush=True)
        if on_ready is not None:
            return int(on_ready(addresses) or 0)
        while not stop.wait(0.2):
            for r in [*replicas, gateway]:
                r.supervise(time.monotonic())
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
        if tls_dir is not None:
            tls_dir.cleanup()
        if sockets is not None:  # the tiers removed theirs as they stopped; a killed one's remains
            shutil.rmtree(sockets, ignore_errors=True)


def add_parser(sub: Any) -> None:
    from splitserve.cliargs import add_kv_flag, add_rollout_flags

    p = sub.add_parser("up", help="Run every tier and the gateway locally; prints their addresses as JSON.")
    p.add_argument(
        "bundle_uri",
        nargs="+",
        help="Serving bundle URI; more URIs are served beside it, each under its bundle's name (requests choose by model).",
    )
    add_kv_flag(
        p,
        "--replicas",
        "TIER=N",
        "Replicas of a tier, e.g. --replicas model=2 (preprocess, postprocess: 1; model: one per core, up to 4, "
        "one intra-op thread each).",
    )
    p.add_argument("--backend", choices=("onnx", "torch"), default="onnx", help="Model-tier backend.")
    p.add_argument("--host", default="127.0.0.1", help="Address every process binds.")
    p.add_argument("--port", type=int, default=0, help="Gateway port (0: a free one).")
    p.add_argument("--rest-port", type=int, default=0, help="Gateway's REST/OpenAI port (0: a free one).")
    p.add_argument("--no-rest", action="store_true", help="Serve the gateway over gRPC only.")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="Where the model tier runs.")
    p.add_argument("--auth-token-file", help="Gateway: accept only calls bearing one of this file's tokens.")
    p.add_argument(
        "--cache-bytes",
        type=int,
        default=0,
        help="Gateway: keep deterministic answers, per record, in a response cache of at most this many bytes "
        "(0: none; see serve-gateway --cache-bytes).",
    )
    p.add_argument(
        "--tier-mtls",
        action="store_true",
        help="Mutual TLS between the gateway and the tiers (certificates made for this run): the tiers accept only the gateway.",
    )
    p.add_argument(
        "--tier-transport",
        choices=("unix", "tcp"),
        default="unix",
        help="How the gateway reaches the tiers: Unix-domain sockets in a private temporary folder (unix, this "
        "host only) or TCP on --host (tcp). The gateway's own ports are TCP either way.",
    )
    p.add_argument(
        "--inline-stages",
        action="store_true",
        help="Run the preprocess and postprocess stages inside the gateway (no tiers for them; lower latency).",
    )
    add_rollout_flags(p)
    p.add_argument(
        "--intra-op-threads",
        type=int,
        help="Threads per model replica (default: this machine's CPUs divided among the model replicas).",
    )
    p.set_defaults(func=run)


def run(args: Any) -> int:
    from splitserve.cliargs import check_port, parse_kv, replicas
    from splitserve.core.bundle import PARTS, load_bundle
    from splitserve.core.cache import cache_root
    from splitserve.mlflow_env import ensure_tracking_uri

    ensure_tracking_uri()
    given = parse_kv(args.replicas)
    given.setdefault("model", default_model_replicas())
    counts = replicas(given)
    # What can be checked is checked before anything starts: the address, the bundle (its
    # serving.json, fetched into the cache the tiers then share), the token file.
    check_port(args.host, args.port)
    if args.rest_port and not args.no_rest:
        check_port(args.host, args.rest_port, "--rest-port")
    if args.cache_bytes < 0:
        raise SystemExit(f"error: --cache-bytes {args.cache_bytes}: expected 0 (no cache) or a number of bytes")
    if args.auth_token_file and not Path(args.auth_token_file).is_file():
        raise SystemExit(f"error: --auth-token-file {args.auth_token_file}: no such file")
    # Fetched once into the host's bundle cache, held while `up` runs; every replica (and every
    # restart) then loads that verified folder: no fetch per start, one bundle whatever an alias
    # does. Every part any tier reads (the template too), since the tiers are handed the folder.
    first, *more = args.bundle_uri
    bundle = load_bundle(first, PARTS)
    if (args.watch_alias or more) and args.inline_stages:
        raise SystemExit(
            "error: --watch-alias and several bundles need the preprocess and postprocess tiers: drop --inline-stages"
        )
    tier_args = ["--watch-alias", "--watch-interval-s", str(args.watch_interval_s)] if args.watch_alias else []
    if more:  # served beside the first, each under its own name (requests choose by `model`)
        specs = []
        for uri in more:
            other = load_bundle(uri, PARTS)
            specs.append(
                f"{other.config.name}={other.root if other.root.parent == cache_root() and not args.watch_alias else uri}"
            )
        tier_args += ["--bundle", *specs]
    model_args = ["--intra-op-threads", str(args.intra_op_threads)] if args.intra_op_threads is not None else []
    model_args += ["--device", args.device]
    return up(
        # With --watch-alias every replica follows the alias itself.
        str(bundle.root) if bundle.root.parent == cache_root() and not args.watch_alias else first,
        counts["preprocess"],
        counts["model"],
        counts["postprocess"],
        args.backend,
        args.host,
        args.port,
        model_args,
        inline_stages=args.inline_stages,
        gateway_args=[
            *(["--auth-token-file", args.auth_token_file] if args.auth_token_file else []),
            *(["--cache-bytes", str(args.cache_bytes)] if args.cache_bytes else []),
        ],
        rest_port=None if args.no_rest else args.rest_port,
        tier_mtls=args.tier_mtls,
        tier_args=tier_args,
        tier_transport=args.tier_transport,
    )
