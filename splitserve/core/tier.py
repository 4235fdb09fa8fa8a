"""What every tier that serves a bundle shares: loading its parts off the event loop, readiness,
the versions it holds, and the `Info` it answers. A tier subclasses `BundleTier`, names the bundle
parts it needs and builds its stage (`build`, run in a worker thread so health answers while it
loads).

A tier holds a list of loaded versions (`Loaded`: a bundle's name, fingerprint and stage), the
current one first. A request names the fingerprint it wants (empty: the current one); a
fingerprint the tier does not hold is a bundle mismatch. With `watch_alias` the tier polls its
`models:/name@alias` URI (through the bundle cache's fetch process: no MLflow here) and, when the
alias moved, loads the new version beside the old one and makes it current; the old one is
unloaded once nothing uses it: no request in flight, none for `retire_after_s`, and the new one
already served a request (so the gateway has switched to it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

from protos import splitserve_pb2 as pb
from splitserve.core import cache
from splitserve.core.bundle import Bundle, load_bundle
from splitserve.core.errors import BundleMismatch, DeadlineExceeded, ModelNotReady, shown
from splitserve.core.settings import BundleServerSettings

T = TypeVar("T")
log = logging.getLogger("splitserve.tier")


@dataclass
class Loaded:
    """One version of a bundle this tier holds: its stage, and what retiring it waits for."""

    name: str
    bundle: Bundle
    stage: Any
    in_flight: int = 0
    last_used: float = 0.0  # time.monotonic() of its last request's end (0: never used)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return self.bundle.fingerprint


class BundleTier:
    name = ""
    service_names: list[str] = []
    parts: tuple[str, ...] = ()  # the bundle artifacts this tier fetches (besides serving.json)

    def __init__(self, settings: BundleServerSettings):
        self.settings = settings
        self.versions: list[Loaded] = []  # the current version first
        self._workers: ThreadPoolExecutor | None = None
        self._watcher: asyncio.Task[None] | None = None

    def build(self, bundle: Bundle) -> Any:
        """The tier's stage for a loaded bundle (runs in a worker thread); `Info` reads its `streams`."""
        raise NotImplementedError

    async def started(self, version: Loaded) -> dict[str, Any]:
        """Runs on the event loop once a version's stage is built; returns more facts for the ready line."""
        return {}

    async def stopped(self, version: Loaded) -> None:
        """Runs on the event loop when a version is unloaded (nothing uses it any more)."""

    @property
    def model_name(self) -> str:
        return self.versions[0].name if self.versions else ""

    async def load(self) -> dict[str, Any]:
        version = await self.add(self.settings.bundle_uri)
        if self.settings.watch_alias:
            self._watcher = asyncio.create_task(self._watch())
        bundle = version.bundle
        return {"model": version.name, "task": bundle.config.task, "fingerprint": bundle.fingerprint, **version.facts}

    async def add(self, uri: str) -> Loaded:
        """Load the bundle at `uri` beside the versions held and make it the current one (one
        already held just becomes current again)."""
        s = self.settings
        loop = asyncio.get_running_loop()
        bundle = await loop.run_in_executor(None, lambda: load_bundle(uri, self.parts, cache_dir=s.cache_dir))
        held = [v for v in self.versions if v.fingerprint == bundle.fingerprint]
        if held:
            cache.release(bundle.root)  # this load's own hold: the version held holds it already
            version = held[0]
            self.versions.remove(version)
        else:
            stage = await loop.run_in_executor(None, self.build, bundle)
            # A version that follows another is served under the same name, whatever its own bundle says.
            name = s.model_name or (self.versions[0].name if self.versions else bundle.config.name)
            version = Loaded(name, bundle, stage)
            version.facts = await self.started(version)
        previous = self.versions[0].fingerprint if self.versions else ""
        self.versions.insert(0, version)
        if previous and previous != version.fingerprint:
            log.info("%s: serving %s (from %s), %s until unused", self.name, version.fingerprint, uri, previous)
        return version

    async def _watch(self) -> None:
        """Follow the alias: poll, load a new version beside the current one, retire the old."""
        s = self.settings
        while True:
            await asyncio.sleep(s.watch_interval_s)
            try:
                if self.versions[0].fingerprint != await self._resolve():
                    await self.add(s.bundle_uri)
            except Exception as exc:  # noqa: BLE001 - a failed poll keeps serving what is loaded
                log.warning("%s: polling %s failed: %s", self.name, s.bundle_uri, exc)
            await self.retire()

    async def _resolve(self) -> str:
        """The fingerprint the watched URI names now (its serving.json fetched into the cache)."""
        s = self.settings
        entry = await asyncio.get_running_loop().run_in_executor(None, cache.fetch, s.bundle_uri, (), s.cache_dir)
        cache.release(entry)  # the poll's own hold; a version loaded from it holds it again
        return entry.name

    async def retire(self) -> list[str]:
        """Unload the versions behind the current one that nothing uses any more; their fingerprints."""
        if not self.versions:
            return []
        current, now, retired = self.versions[0], time.monotonic(), []
        for old in self.versions[1:]:
            unused = old.in_flight == 0 and now - old.last_used >= self.settings.retire_after_s
            if unused and current.last_used > old.last_used:
                self.versions.remove(old)
                await self.stopped(old)
                cache.release(old.bundle.root)
                retired.append(old.fingerprint)
                log.info("%s: unloaded %s (unused)", self.name, old.fingerprint)
        return retired

    @contextlib.contextmanager
    def using(self, fingerprint: str = "", source: str = "the request") -> Iterator[Loaded]:
        """The version `fingerprint` names (empty: the current one), counted in use meanwhile."""
        version = self.ready(fingerprint, source)
        version.in_flight += 1
        try:
            yield version
        finally:
            version.in_flight -= 1
            version.last_used = time.monotonic()

    async def offload(self, context: Any, work: Callable[..., T], *args: Any) -> T:
        """Run the stage's CPU work (tokenizing, decoding) in a worker thread, so that the event loop
        keeps answering (health within milliseconds, whatever the load), bounded by the call's
        deadline: work still queued when it passes is skipped; the caller stops waiting at it."""
        if self._workers is None:
            self._workers = ThreadPoolExecutor(self.settings.stage_threads, thread_name_prefix=f"{self.name}-stage")
        left = context.time_remaining() if context is not None else None
        deadline = None if left is None else time.monotonic() + left

        def run() -> T:
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlineExceeded(f"{self.name}: the request's deadline passed while it waited")
            return work(*args)

        future = asyncio.get_running_loop().run_in_executor(self._workers, run)
        try:
            return await asyncio.wait_for(future, left)
        except TimeoutError:
            raise DeadlineExceeded(f"{self.name}: the request's deadline passed during its work") from None

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        if self._workers is not None:
            self._workers.shutdown(wait=False, cancel_futures=True)

    def ready(self, fingerprint: str = "", source: str = "the request") -> Loaded:
        """The version `fingerprint` names (empty: the current one)."""
        if not self.versions:
            raise ModelNotReady(f"{self.name} tier is still loading")
        if not fingerprint:
            return self.versions[0]
        for version in self.versions:
            if version.fingerprint == fingerprint:
                return version
        raise BundleMismatch(
            f"bundle mismatch: {source} is for bundle {shown(fingerprint)}, this tier serves "
            f"{', '.join(v.fingerprint for v in self.versions)}; all tiers must be loaded from the same serving bundle"
        )

    async def Info(self, request: pb.TierInfoRequest, context: grpc.aio.ServicerContext) -> pb.TierInfo:
        current = self.ready()
        return pb.TierInfo(
            tier=self.name,
            model=current.name,
            task=current.bundle.config.task,
            fingerprint=current.fingerprint,
            streams=current.stage.streams,
            fingerprints=[v.fingerprint for v in self.versions],
        )
