"""What every tier that serves a bundle shares: loading its parts off the event loop, readiness,
and the `Info` it answers. A tier subclasses `BundleTier`, names the bundle parts it needs and
builds its stage (`build`, run in a worker thread so health answers while it loads)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import grpc

from protos import splitserve_pb2 as pb
from splitserve.core.bundle import Bundle, load_bundle
from splitserve.core.errors import DeadlineExceeded, ModelNotReady
from splitserve.core.settings import BundleServerSettings

T = TypeVar("T")


class BundleTier:
    name = ""
    service_names: list[str] = []
    parts: tuple[str, ...] = ()  # the bundle artifacts this tier fetches (besides serving.json)

    def __init__(self, settings: BundleServerSettings):
        self.settings = settings
        self.bundle: Bundle | None = None
        self.stage: Any = None
        self.model_name = ""
        self._workers: ThreadPoolExecutor | None = None

    def build(self, bundle: Bundle) -> Any:
        """The tier's stage for a loaded bundle (runs in a worker thread); `Info` reads its `streams`."""
        raise NotImplementedError

    async def started(self) -> dict[str, Any]:
        """Runs on the event loop once the stage is built; returns more facts for the ready line."""
        return {}

    async def load(self) -> dict[str, Any]:
        def load_and_build() -> tuple[Bundle, Any]:
            bundle = load_bundle(self.settings.bundle_uri, self.parts, cache_dir=self.settings.cache_dir)
            return bundle, self.build(bundle)

        bundle, stage = await asyncio.get_running_loop().run_in_executor(None, load_and_build)
        self.model_name = self.settings.model_name or bundle.config.name
        self.bundle, self.stage = bundle, stage
        facts = await self.started()
        return {"model": self.model_name, "task": bundle.config.task, "fingerprint": bundle.fingerprint, **facts}

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
        if self._workers is not None:
            self._workers.shutdown(wait=False, cancel_futures=True)

    def ready(self) -> tuple[Bundle, Any]:
        if self.bundle is None or self.stage is None:
            raise ModelNotReady(f"{self.name} tier is still loading")
        return self.bundle, self.stage

    async def Info(self, request: pb.TierInfoRequest, context: grpc.aio.ServicerContext) -> pb.TierInfo:
        bundle, stage = self.ready()
        return pb.TierInfo(
            tier=self.name,
            model=self.model_name,
            task=bundle.config.task,
            fingerprint=bundle.fingerprint,
            streams=stage.streams,
        )
