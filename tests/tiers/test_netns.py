"""Tiers on separate hosts, for real: Linux network namespaces on one machine, created and removed
by the test. The preprocess, model and postprocess tiers each run in a namespace of their own with
their own address, the gateway in a fourth, a second model replica in a fifth, and the client in a
sixth, all on one bridge (in a namespace of its own too, so the machine's own network is left
alone). A request flows; then, under load, the first model host's link goes down (its processes
keep running, unreachable: no connection is closed, as when a node drops off the network). The
gateway's keepalive pings notice within about two seconds, and the calls that were on that host are
retried on the other replica: 0 lost, 0 wrong.

Needs root and a kernel that allows network namespaces, veth pairs and bridges; skipped with the
reason otherwise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from splitserve.commands.up import Replica

SUBNET = "10.213.77"
HOSTS = {"pre": 1, "model-a": 2, "post": 3, "gateway": 4, "model-b": 5, "client": 6}
PORT = 7000
LOAD_S = 10.0
DOWN_AFTER_S = 2.0
TAG = f"ss{os.getpid() % 100000}"


def ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True)


def ns(host: str) -> str:
    return f"{TAG}-{host}"


def address(host: str) -> str:
    return f"{SUBNET}.{HOSTS[host]}"


def veth(host: str, side: str) -> str:
    return f"{TAG}{HOSTS[host]}{side}"  # at most 15 characters


class Network:
    """A bridge in a namespace of its own, and one namespace ("host") per entry of HOSTS on it."""

    def __enter__(self) -> Network:
        self.created: list[str] = []
        switch = f"{TAG}-sw"
        self._run("netns", "add", switch)
        self.created.append(switch)
        self._run("-n", switch, "link", "add", "br0", "type", "bridge")
        self._run("-n", switch, "link", "set", "br0", "up")
        for host in HOSTS:
            self._run("netns", "add", ns(host))
            self.created.append(ns(host))
            self._run("link", "add", veth(host, "h"), "type", "veth", "peer", "name", veth(host, "s"))
            self._run("link", "set", veth(host, "h"), "netns", ns(host))
            self._run("link", "set", veth(host, "s"), "netns", switch)
            self._run("-n", switch, "link", "set", veth(host, "s"), "master", "br0", "up")
            self._run("-n", ns(host), "addr", "add", f"{address(host)}/24", "dev", veth(host, "h"))
            self._run("-n", ns(host), "link", "set", veth(host, "h"), "up")
            self._run("-n", ns(host), "link", "set", "lo", "up")
        return self

    def _run(self, *args: str) -> None:
        done = ip(*args)
        if done.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")

    def link_down(self, host: str) -> None:
        self._run("-n", ns(host), "link", "set", veth(host, "h"), "down")

    def __exit__(self, *exc: object) -> None:
        for name in reversed(self.created):  # removing a namespace removes its interfaces
            ip("netns", "del", name)


def skip_reason() -> str | None:
    if shutil.which("ip") is None:
        return "iproute2's ip not found"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"{TAG}-probe"
    done = ip("netns", "add", probe)
    if done.returncode != 0:
        return f"the kernel refused a network namespace: {done.stderr.strip()}"
    ip("netns", "del", probe)
    return None


def on(host: str, command: str, *args: str) -> Replica:
    argv = ["ip", "netns", "exec", ns(host), sys.executable, "-m", "splitserve", command, *args]
    return Replica(
        host, argv + ["--host", address(host), "--port", str(PORT), "--grace-s", "1", "--log-level", "warning"]
    )


@pytest.mark.slow
def test_tiers_on_separate_hosts_survive_a_host_going_down(tiny_bundles) -> None:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    bundle = tiny_bundles[("feature-extraction", "bert")].local_dir
    try:
        network = Network().__enter__()
    except RuntimeError as exc:
        ip_cleanup()
        pytest.skip(f"the kernel refused part of the network: {exc}")
    replicas = [
        on("pre", "serve-preprocess", bundle),
        on("model-a", "serve-model", bundle, "--intra-op-threads", "1"),
        on("model-b", "serve-model", bundle, "--intra-op-threads", "1"),
        on("post", "serve-postprocess", bundle),
    ]
    tier = f":{PORT}"
    gateway = on(
        "gateway",
        "serve-gateway",
        *("--preprocess", address("pre") + tier, "--postprocess", address("post") + tier),
        *("--model", address("model-a") + tier, address("model-b") + tier),
        *("--keepalive-s", "1", "--keepalive-timeout-s", "1"),
    )
    load = None
    try:
        deadline = time.monotonic() + 300
        for r in replicas:
            r.start()
        for r in replicas:
            assert r.wait_ready(deadline) == address(r.tier) + tier
        gateway.start()
        assert gateway.wait_ready(deadline) == address("gateway") + tier

        script = str(Path(__file__).parents[1] / "support" / "netns_load.py")
        load = subprocess.Popen(
            ["ip", "netns", "exec", ns("client"), sys.executable, script, address("gateway") + tier, str(LOAD_S), "4"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert load.stdout is not None
        assert json.loads(load.stdout.readline()) == {"phase": "warm"}  # a request flows, host to host
        time.sleep(DOWN_AFTER_S)
        network.link_down("model-a")
        line = load.stdout.readline()
        assert load.wait(60) == 0, "the load client failed"
        report = json.loads(line)
        print(f"\nnetns: model-a's link down after {DOWN_AFTER_S:.0f} s of {LOAD_S:.0f} s under load: {report}")
        assert report["requests"] > 100
        assert report["lost"] == 0 and report["wrong"] == 0, report
    finally:
        if load is not None and load.poll() is None:
            load.kill()
        for r in [gateway, *replicas]:
            if r.proc is not None and r.proc.poll() is None:
                r.proc.kill()
                r.proc.wait()
        network.__exit__()


def ip_cleanup() -> None:
    for name in [f"{TAG}-sw", *(ns(h) for h in HOSTS)]:
        ip("netns", "del", name)
