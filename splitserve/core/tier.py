"""What every tier that serves a bundle shares: loading its parts off the event loop, readiness,
the versions it holds, and the `Info` it answers. A tier subclasses `BundleTier`, names the bundle
parts it needs and builds its runtime (`build`: the tier's stage driver, or the model tier's
engine; run in a worker thread so health answers while it loads).

A tier holds a list of loaded versions (`Loaded`: a model name, a bundle and its runtime), keyed by
name and fingerprint: one model per bundle it was given (BUNDLE_URI's is the default, `--bundle
NAME=URI` adds more), each model's current version before its others. A request names the model
(empty: the default) and the fingerprint it wants (empty: the current one); a fingerprint the tier
does not hold is a bundle mismatch. With `watch_alias` the tier polls each `models:/name@alias` URI
it was given (through the bundle cache's fetch process: no MLflow here) and, when an alias moved,
loads the new version beside the old one and makes it current; the old one is unloaded once nothing
uses it: no request in flight, none for `retire_after_s`, and the new one already served a request
(so the gateway has switched to it).
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
from splitserve.core import cache, heap
from splitserve.core.bundle import Bundle, load_bundle
from splitserve.core.errors import BundleMismatch, DeadlineExceeded, InvalidInput, ModelNotFound, ModelNotReady, shown
from splitserve.core.settings import ALIAS_URI, BundleServerSettings

T = TypeVar("T")
log = logging.getLogger("splitserve.tier")


@dataclass
class Loaded:
    """One version of a bundle this tier holds: its runtime (what `build` made of it), and what
    retiring it waits for."""

    name: str
    bundle: Bundle
    runtime: Any
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
        self.versions: list[Loaded] = []  # every model's, each model's current version before its others
        self.sources: dict[str, str] = {}  # model name -> the URI it was loaded from; the default model first
        self._workers: ThreadPoolExecutor | None = None
        self._watcher: asyncio.Task[None] | None = None

    def build(self, bundle: Bundle) -> Any:
        """The tier's runtime for a loaded bundle (runs in a worker thread); `Info` reads its `streams`."""
        raise NotImplementedError

    async def started(self, version: Loaded) -> dict[str, Any]:
        """Runs on the event loop once a version's runtime is built; returns more facts for the ready line."""
        return {}

    async def stopped(self, version: Loaded) -> None:
        """Runs on the event loop when a version is unloaded (nothing uses it any more)."""

    @property
    def model_name(self) -> str:
        """The default model: the one BUNDLE_URI serves (requests that name none get it)."""
        return next(iter(self.sources), "")

    async def load(self) -> dict[str, Any]:
        s = self.settings
        version = await self.add(s.bundle_uri, s.model_name or "")
        for name, uri in bundle_specs(s.bundle):
            await self.add(uri, name)
        if s.watch_alias:
            self._watcher = asyncio.create_task(self._watch())
        bundle = version.bundle
        facts: dict[str, Any] = {"model": version.name, "task": bundle.config.task, "fingerprint": bundle.fingerprint}
        if len(self.sources) > 1:
            facts["models"] = list(self.sources)
        return {**facts, **version.facts}

    async def add(self, uri: str, name: str = "") -> Loaded:
        """Load the bundle at `uri` beside the versions held and make it the current version of
        model `name` (empty: the default model's, or the bundle's own name for the first); one
        already held just becomes current again."""
        s = self.settings
        loop = asyncio.get_running_loop()
        bundle = await loop.run_in_executor(None, lambda: load_bundle(uri, self.parts, cache_dir=s.cache_dir))
        # A version that follows another is served under the same name, whatever its own bundle says.
        name = name or self.model_name or bundle.config.name
        self.sources.setdefault(name, uri)
        held = [v for v in self.versions if v.name == name and v.fingerprint == bundle.fingerprint]
        if held:
            cache.release(bundle.root)  # this load's own hold: the version held holds it already
            version = held[0]
            self.versions.remove(version)
        else:
            runtime = await loop.run_in_executor(None, self.build, bundle)
            version = Loaded(name, bundle, runtime)
            version.facts = await self.started(version)
            heap.settle()
        previous = [v.fingerprint for v in self.versions if v.name == name][:1]
        self.versions.insert(0, version)
        if previous and previous[0] != version.fingerprint:
            log.info(
                "%s: %s: serving %s (from %s), %s until unused", self.name, name, version.fingerprint, uri, previous[0]
            )
        return version

    async def _watch(self) -> None:
        """Follow the aliases: poll, load a new version beside the current one, retire the old."""
        s = self.settings
        while True:
            await asyncio.sleep(s.watch_interval_s)
            for name, uri in list(self.sources.items()):
                if not ALIAS_URI.fullmatch(uri):
                    continue
                try:
                    if self.ready(name=name).fingerprint != await self._resolve(uri):
                        await self.add(uri, name)
                except Exception as exc:  # noqa: BLE001 - a failed poll keeps serving what is loaded
                    log.warning("%s: polling %s failed: %s", self.name, uri, exc)
            await self.retire()

    async def _resolve(self, uri: str) -> str:
        """The fingerprint `uri` names now (its serving.json fetched into the cache)."""
        s = self.settings
        entry = await asyncio.get_running_loop().run_in_executor(None, cache.fetch, uri, (), s.cache_dir)
        cache.release(entry)  # the poll's own hold; a version loaded from it holds it again
        return entry.name

    async def retire(self) -> list[str]:
        """Unload the versions behind the current one that nothing uses any more; their fingerprints."""
        now, retired = time.monotonic(), []
        for old in list(self.versions):
            current = self.ready(name=old.name)
            unused = old.in_flight == 0 and now - old.last_used >= self.settings.retire_after_s
            if old is not current and unused and current.last_used > old.last_used:
                self.versions.remove(old)
                await self.stopped(old)
                cache.release(old.bundle.root)
                retired.append(old.fingerprint)
                log.info("%s: unloaded %s (unused)", self.name, old.fingerprint)
        if retired:
            heap.settle(unloaded=True)
        return retired

    async def unload(self, name: str) -> list[str]:
        """Stop serving model `name` (new requests: NOT_FOUND) and unload its versions once the
        requests in flight on them end; their fingerprints."""
        gone = [v for v in self.versions if v.name == name]
        if not gone:
            raise ModelNotFound(f"model {shown(name)} is not loaded here")
        self.versions = [v for v in self.versions if v.name != name]
        for version in gone:
            while version.in_flight:
                await asyncio.sleep(0.05)
            await self.stopped(version)
            cache.release(version.bundle.root)
        heap.settle(unloaded=True)
        log.info("%s: unloaded model %s", self.name, name)
        return [v.fingerprint for v in gone]

    @contextlib.contextmanager
    def using(self, fingerprint: str = "", source: str = "the request", name: str = "") -> Iterator[Loaded]:
        """The version `fingerprint` of model `name` (empty: the current one of the default model),
        counted in use meanwhile."""
        version = self.ready(fingerprint, source, name)
        version.in_flight += 1
        try:
            yield version
        finally:
            version.in_flight -= 1
            version.last_used = time.monotonic()

    async def offload(self, context: Any, work: Callable[..., T], *args: Any, small: bool = False) -> T:
        """Run the stage's CPU work (tokenizing, decoding) in a worker thread, so that the event loop
        keeps answering (health within milliseconds, whatever the load), bounded by the call's
        deadline: work still queued when it passes is skipped; the caller stops waiting at it.
        `small` work (well under a millisecond: a few short records, no template, no audio) runs on
        the loop itself: the two thread hand-offs would cost more than it blocks."""
        if small:
            return work(*args)
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

    def ready(self, fingerprint: str = "", source: str = "the request", name: str = "") -> Loaded:
        """The version `fingerprint` of model `name` (empty: the current one; the default model)."""
        if not self.versions:
            raise ModelNotReady(f"{self.name} tier is still loading")
        mine = [v for v in self.versions if v.name == (name or self.model_name)]
        if not mine:
            raise ModelNotFound(
                f"model {shown(name)} is not served here; this tier serves {', '.join(map(repr, self.sources))}"
            )
        if not fingerprint:
            return mine[0]
        for version in mine:
            if version.fingerprint == fingerprint:
                return version
        raise BundleMismatch(
            f"bundle mismatch: {source} is for bundle {shown(fingerprint)}, this tier serves "
            f"{', '.join(v.fingerprint for v in mine)}; all tiers must be loaded from the same serving bundle"
        )

    async def Info(self, request: pb.TierInfoRequest, context: grpc.aio.ServicerContext) -> pb.TierInfo:
        current = self.ready(name=request.model)
        return pb.TierInfo(
            tier=self.name,
            model=current.name,
            task=current.bundle.config.task,
            fingerprint=current.fingerprint,
            streams=current.runtime.streams,
            fingerprints=[v.fingerprint for v in self.versions if v.name == current.name],
            models=list(self.sources),
        )


def bundle_specs(specs: list[str]) -> list[tuple[str, str]]:
    """`--bundle NAME=URI ...` as (name, URI) pairs."""
    pairs = []
    for spec in specs:
        name, sep, uri = spec.partition("=")
        if not sep or not name or not uri:
            raise InvalidInput(f"--bundle takes NAME=URI, not {shown(spec)}")
        pairs.append((name, uri))
    return pairs
