"""Real gRPC servers of every tier, in this process, on free loopback ports.

The servers run in a background thread's event loop, so tests can use the synchronous
client. Each tier is loaded exactly as its own process would load it.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from gateway_svc.server import GatewayTier
from gateway_svc.settings import GatewaySettings
from model_svc.server import ModelTier
from model_svc.settings import ModelSettings
from postprocess_svc.server import PostprocessTier
from postprocess_svc.settings import PostprocessSettings
from preprocess_svc.server import PreprocessTier
from preprocess_svc.settings import PreprocessSettings
from splitserve.core.grpc_server import Running, start
from splitserve.inline import inline_servicers


class Stack:
    def __init__(
        self,
        bundle_uri: str,
        model_bundle_uri: str | None = None,
        post_bundle_uri: str | None = None,
        pre: dict[str, Any] | None = None,
        model: dict[str, Any] | None = None,
        post: dict[str, Any] | None = None,
        gateway: dict[str, Any] | None = None,
    ):
        self.settings = [
            (PreprocessTier, PreprocessSettings(bundle_uri=bundle_uri, **(pre or {}))),
            (ModelTier, ModelSettings(bundle_uri=model_bundle_uri or bundle_uri, **(model or {}))),
            (PostprocessTier, PostprocessSettings(bundle_uri=post_bundle_uri or bundle_uri, **(post or {}))),
        ]
        self.gateway_overrides = gateway or {}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.running: list[Running] = []
        self.addresses: dict[str, str] = {}

    def _call(self, coro: Any, timeout: float = 300) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self, tier: Any, settings: Any) -> str:
        running = await start(tier, settings)
        self.running.append(running)
        await tier.load()
        await running.set_serving(True)
        if running.rest is not None:  # its REST door (rest_port): "gateway-rest", "model-rest"
            self.addresses[f"{tier.name}-rest"] = f"127.0.0.1:{running.rest.port}"
        return f"127.0.0.1:{running.port}"

    async def _start_all(self) -> None:
        names = ("preprocess", "model", "postprocess")
        started = await asyncio.gather(*(self._start(cls(settings), settings) for cls, settings in self.settings))
        self.addresses.update(zip(names, started, strict=True))
        tiers = {
            "preprocess": [self.addresses["preprocess"]],
            "model": [self.addresses["model"]],
            "postprocess": [self.addresses["postprocess"]],
        }
        gw = GatewaySettings(**{**tiers, **self.gateway_overrides})
        servicers = inline_servicers(gw.inline_stages) if gw.inline_stages is not None else None
        self.gateway_tier = GatewayTier(gw, servicers)
        self.addresses["gateway"] = await self._start(self.gateway_tier, gw)

    async def _stop_all(self) -> None:
        for running in reversed(self.running):
            await running.stop(0.5)
            close = getattr(running.tier, "close", None)
            if close is not None:
                await close()

    def __enter__(self) -> Stack:
        self.thread.start()
        self._call(self._start_all())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._call(self._stop_all(), timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)

    @property
    def gateway(self) -> str:
        return self.addresses["gateway"]

    @property
    def rest(self) -> str:
        """The gateway's REST base URL (with gateway={"rest_port": 0})."""
        return f"http://{self.addresses['gateway-rest']}"
