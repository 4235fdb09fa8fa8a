"""Rebalancing after a scale-out, on loopback: a gateway (a real `serve-gateway` process) reaches
its model tier by a DNS name that first resolves to one replica; a second replica starts and the
name gains its address (as a Kubernetes headless Service's does); the replicas close connections
after `max_connection_age_s`, the gateway re-resolves, and traffic reaches the new replica within
REBALANCE_BOUND_S, with no request failing meanwhile.

The name lives in a hosts file bind-mounted over /etc/hosts in the gateway's own mount namespace
(`unshare -m`), so the machine's /etc/hosts is never touched."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from model_svc.server import ModelTier
from model_svc.settings import ModelSettings
from postprocess_svc.server import PostprocessTier
from postprocess_svc.settings import PostprocessSettings
from preprocess_svc.server import PreprocessTier
from preprocess_svc.settings import PreprocessSettings
from splitserve.client import Client
from splitserve.core.grpc_server import Running, start

NAME = "model.splitserve.test"
MAX_CONNECTION_AGE_S = 1.0
REBALANCE_BOUND_S = 10.0  # age 1 s (+ gRPC's jitter) + DNS refresh 0.2 s + reconnecting, with room
CONTROL_S = 3.0  # without a connection age, the new replica gets nothing for (at least) this long


class Servers:
    """Tier servers in this process, on a background event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.running: list[Running] = []

    def start(self, tier: Any, settings: Any) -> int:
        async def go() -> int:
            running = await start(tier, settings)
            self.running.append(running)
            await tier.load()
            await running.set_serving(True)
            return running.port

        return asyncio.run_coroutine_threadsafe(go(), self.loop).result(300)

    def stop(self) -> None:
        async def stop_all() -> None:
            for running in reversed(self.running):
                await running.stop(0.2)
                close = getattr(running.tier, "close", None)
                if close is not None:
                    await close()

        try:
            asyncio.run_coroutine_threadsafe(stop_all(), self.loop).result(30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


def counted(tier: ModelTier) -> list[int]:
    """Count the ModelInfer calls a replica answers (set before the servicer is registered)."""
    calls = [0]
    infer = tier.ModelInfer

    async def model_infer(request: Any, context: Any) -> Any:
        calls[0] += 1
        return await infer(request, context)

    tier.ModelInfer = model_infer  # type: ignore[method-assign]
    return calls


def gateway_in_own_mount_namespace(hosts: Path, argv: list[str]) -> subprocess.Popen[str]:
    script = 'mount --bind "$1" /etc/hosts || exit 97; shift; exec "$@"'
    env = {**os.environ, "GRPC_DNS_RESOLVER": "native"}  # getaddrinfo: reads /etc/hosts on every resolution
    return subprocess.Popen(
        ["unshare", "-m", "--", "sh", "-c", script, "sh", str(hosts), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def can_unshare() -> str | None:
    if shutil.which("unshare") is None:
        return "unshare(1) not found"
    done = subprocess.run(["unshare", "-m", "--", "true"], capture_output=True, text=True)
    return None if done.returncode == 0 else f"unshare -m refused: {done.stderr.strip()}"


@pytest.mark.slow
@pytest.mark.parametrize("age_s", [MAX_CONNECTION_AGE_S, 0.0], ids=["aged", "control-no-age"])
def test_traffic_reaches_a_replica_added_to_dns(tiny_bundles, tmp_path: Path, age_s: float) -> None:
    """With the control (no connection age) the gateway keeps its one connection and never
    re-resolves: what rebalances is the servers' max_connection_age."""
    reason = can_unshare()
    if reason:
        pytest.skip(f"needs a private mount namespace for the gateway's /etc/hosts: {reason}")
    bundle = tiny_bundles[("feature-extraction", "bert")].local_dir
    servers = Servers()
    gateway = None
    try:
        pre = servers.start(*_tier(PreprocessTier, PreprocessSettings(bundle_uri=bundle)))
        post = servers.start(*_tier(PostprocessTier, PostprocessSettings(bundle_uri=bundle)))
        aged = {"max_connection_age_s": age_s, "max_connection_age_grace_s": 1.0}
        first = ModelTier(ModelSettings(bundle_uri=bundle, host="127.0.0.2", **aged))
        first_calls = counted(first)
        port = servers.start(first, first.settings)
        hosts = tmp_path / "hosts"
        hosts.write_text(f"127.0.0.1 localhost\n127.0.0.2 {NAME}\n")
        argv = [sys.executable, "-m", "splitserve", "serve-gateway", "--preprocess", f"127.0.0.1:{pre}"]
        argv += ["--postprocess", f"127.0.0.1:{post}", "--model", f"dns:///{NAME}:{port}", "--dns-refresh-s", "0.2"]
        gateway = gateway_in_own_mount_namespace(hosts, argv)
        assert gateway.stdout is not None
        line = gateway.stdout.readline()
        if not line:
            gateway.wait(10)
            if gateway.returncode == 97:
                pytest.skip("mount --bind over /etc/hosts refused in the gateway's mount namespace")
            raise AssertionError(f"gateway exited: {gateway.stderr.read() if gateway.stderr else ''}")
        address = json.loads(line)["address"]

        errors: list[str] = []
        stop = threading.Event()

        def load() -> None:
            with Client(address, timeout_s=30) as client:
                while not stop.is_set():
                    try:
                        client.predict(["Angela Merkel visited Paris"])
                    except Exception as exc:  # noqa: BLE001 - counted, the test fails on any
                        errors.append(repr(exc))

        workers = [threading.Thread(target=load) for _ in range(4)]
        for w in workers:
            w.start()
        time.sleep(1.5)
        assert first_calls[0] > 0

        second = ModelTier(ModelSettings(bundle_uri=bundle, host="127.0.0.3", port=port, **aged))
        second_calls = counted(second)
        servers.start(second, second.settings)
        with hosts.open("a") as f:  # in place: the bind mount holds this file's inode
            f.write(f"127.0.0.3 {NAME}\n")
        added = time.monotonic()
        bound = REBALANCE_BOUND_S if age_s else CONTROL_S
        while second_calls[0] == 0 and time.monotonic() - added < bound:
            time.sleep(0.05)
        reached_s = time.monotonic() - added
        before = (first_calls[0], second_calls[0])
        time.sleep(2.0)
        stop.set()
        for w in workers:
            w.join(30)
        after = (first_calls[0], second_calls[0])
        print(
            f"\nrebalancing (max_connection_age_s={age_s}): first request on the new replica "
            f"{f'{reached_s:.2f} s' if second_calls[0] else f'none in {bound:.0f} s'} after DNS named it; "
            f"requests in the next 2 s: first {after[0] - before[0]}, second {after[1] - before[1]}; "
            f"failed requests: {len(errors)}"
        )
        assert errors == []
        if not age_s:
            assert second_calls[0] == 0, "without a connection age the gateway should not have re-resolved"
            return
        assert second_calls[0] > 0, f"no request reached the new replica within {REBALANCE_BOUND_S} s"
        assert after[1] - before[1] > 0 and after[0] - before[0] > 0  # both replicas keep serving
    finally:
        if gateway is not None and gateway.poll() is None:
            gateway.terminate()
            gateway.wait(15)
        servers.stop()


def _tier(cls: Any, settings: Any) -> tuple[Any, Any]:
    return cls(settings), settings


def test_idle_keepalive_pings_are_accepted(tiny_bundles, capfd) -> None:
    """The tiers accept the gateway's keepalive pings on idle connections. The server option had a
    wrong name, so gRPC's own 5-minute minimum held and every idle gateway got GOAWAY
    "too_many_pings" after its third ping (an ERROR line, the connection closed, pings slowed)."""
    from tests.support.stack import Stack

    bundle = tiny_bundles[("text-classification", "bert")].local_dir
    with Stack(bundle, gateway={"keepalive_s": 0.6}) as stack, Client(stack.gateway) as client:
        client.predict(["Florida has nice beaches"])
        time.sleep(4.0)  # about six pings on each idle tier connection
        client.predict(["Florida has nice beaches"])
    assert "too_many_pings" not in capfd.readouterr().err
