"""What every tier that serves a bundle shares: loading its parts off the event loop, readiness,
and the `Info` it answers. A tier subclasses `BundleTier`, names the bundle parts it needs and
builds its stage (`build`, run in a worker thread so health answers while it loads)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from protos import splitserve_pb2 as pb
from splitserve.core.bundle import Bundle, load_bundle
from splitserve.core.errors import ModelNotReady
from splitserve.core.settings import BundleServerSettings


class BundleTier:
    name = ""
    service_names: list[str] = []
    parts: tuple[str, ...] = ()  # the bundle artifacts this tier fetches (besides serving.json)

    def __init__(self, settings: BundleServerSettings):
        self.settings = settings
        self.bundle: Bundle | None = None
        self.stage: Any = None
        self.model_name = ""

    def build(self, bundle: Bundle) -> Any:
        """The tier's stage for a loaded bundle (runs in a worker thread); `Info` reads its `streams`."""
        raise NotImplementedError

    async def started(self) -> dict[str, Any]:
        """Runs on the event loop once the stage is built; returns more facts for the ready line."""
        return {}

    async def load(self) -> dict[str, Any]:
        def load_and_build() -> tuple[Bundle, Any]:
            bundle = load_bundle(self.settings.bundle_uri, self.parts)
            return bundle, self.build(bundle)

        bundle, stage = await asyncio.get_running_loop().run_in_executor(None, load_and_build)
        self.model_name = self.settings.model_name or bundle.config.name
        self.bundle, self.stage = bundle, stage
        facts = await self.started()
        return {"model": self.model_name, "task": bundle.config.task, "fingerprint": bundle.fingerprint, **facts}

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
