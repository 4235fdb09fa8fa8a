"""Hosts on one machine, for real: a Linux network namespace per host, each with its own address
on one bridge (itself in a namespace of its own, so the machine's own network is left alone).
Created and removed by the test that uses them; `skip_reason` says why they cannot be made here."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess


def ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True)


def skip_reason(tag: str) -> str | None:
    if shutil.which("ip") is None:
        return "iproute2's ip not found"
    if os.geteuid() != 0:
        return "network namespaces need root"
    done = ip("netns", "add", f"{tag}-probe")
    if done.returncode != 0:
        return f"the kernel refused a network namespace: {done.stderr.strip()}"
    ip("netns", "del", f"{tag}-probe")
    return None


class Hosts:
    """`hosts` (name -> last octet of its address on `subnet`.0/24), as network namespaces."""

    def __init__(self, tag: str, subnet: str, hosts: dict[str, int]):
        self.tag, self.subnet, self.hosts = tag, subnet, hosts
        self.created: list[str] = []

    def ns(self, host: str) -> str:
        return f"{self.tag}-{host}"

    def address(self, host: str) -> str:
        return f"{self.subnet}.{self.hosts[host]}"

    def _veth(self, host: str, side: str) -> str:
        return f"{self.tag}{self.hosts[host]}{side}"[-15:]  # at most 15 characters

    def __enter__(self) -> Hosts:
        try:
            switch = f"{self.tag}-sw"
            self._run("netns", "add", switch)
            self.created.append(switch)
            self._run("-n", switch, "link", "add", "br0", "type", "bridge")
            self._run("-n", switch, "link", "set", "br0", "up")
            for host in self.hosts:
                h, s = self._veth(host, "h"), self._veth(host, "s")
                self._run("netns", "add", self.ns(host))
                self.created.append(self.ns(host))
                self._run("link", "add", h, "type", "veth", "peer", "name", s)
                self._run("link", "set", h, "netns", self.ns(host))
                self._run("link", "set", s, "netns", switch)
                self._run("-n", switch, "link", "set", s, "master", "br0", "up")
                self._run("-n", self.ns(host), "addr", "add", f"{self.address(host)}/24", "dev", h)
                self._run("-n", self.ns(host), "link", "set", h, "up")
                self._run("-n", self.ns(host), "link", "set", "lo", "up")
        except RuntimeError:
            self.__exit__()
            raise
        return self

    def _run(self, *args: str) -> None:
        done = ip(*args)
        if done.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")

    def exec(self, host: str, *argv: str) -> list[str]:
        """`argv` run on `host` (in its namespace)."""
        return ["ip", "netns", "exec", self.ns(host), *argv]

    def pids(self, host: str) -> list[int]:
        """The processes running on `host` (in its namespace)."""
        return [int(p) for p in ip("netns", "pids", self.ns(host)).stdout.split()]

    def kill_all(self, host: str) -> int:
        """kill -9 every process on `host` (the host lost at once); how many there were."""
        pids = self.pids(host)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(pids)

    def __exit__(self, *exc: object) -> None:
        for host in self.hosts:
            if self.ns(host) in self.created:
                self.kill_all(host)
        for name in reversed(self.created):  # removing a namespace removes its interfaces
            ip("netns", "del", name)
        self.created = []
