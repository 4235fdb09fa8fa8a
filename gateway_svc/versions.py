"""Which bundle version each request is pinned to. The gateway asks its tiers which versions
(bundle fingerprints) they hold, at start and every `tier_refresh_s`, and pins each model's requests
to the newest version every replica of every tier holds, so that a request never mixes tiers loaded
from different bundles (during a rollout, too)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import grpc

from gateway_svc.settings import GatewaySettings
from protos import grpc_predict_v2_pb2 as oip
from protos import splitserve_pb2 as pb
from splitserve.core.errors import BundleMismatch, ModelNotFound, ModelNotReady, shown

log = logging.getLogger("splitserve.gateway")


class Versions:
    """What the gateway knows of the models its tiers serve, and the version each is pinned to."""

    def __init__(self, settings: GatewaySettings):
        self.settings = settings
        self.pre: Any = None  # the tiers' stubs (gRPC, or inline), once connected
        self.model: Any = None
        self.post: Any = None
        self.info: pb.TierInfo | None = None  # the default model's
        self.infos: dict[str, pb.TierInfo] = {}  # every model's, by name
        self.held: dict[str, dict[str, list[str]]] = {}  # per model, the versions each tier holds (last refresh)

    def connect(self, pre: Any, model: Any, post: Any) -> None:
        self.pre, self.model, self.post = pre, model, post

    async def refresh(self, wait: bool = False) -> None:
        """Ask the tiers which versions they hold (each tier once per replica named, a few times for
        a dns:/// name: round robin spreads the asks), and pin requests to the newest version every
        replica of every tier holds: the preprocess tier's current version first. None in common:
        say so loudly; requests are refused (bundle mismatch) until they agree. (During a rollout
        every replica keeps the old version until requests come for the new one, i.e. until
        every replica holds it.)"""
        s, timeout = self.settings, 120 if wait else 5

        async def ask(call: Any, request: Any, addresses: list[str]) -> list[Any]:
            answers = [await call(request, wait_for_ready=wait, timeout=timeout)]
            for _ in range(len(addresses) - 1 + 2 * any(a.startswith("dns:") for a in addresses)):
                with contextlib.suppress(grpc.aio.AioRpcError):  # round robin picks among the ready replicas
                    answers.append(await call(request, timeout=5))
            return answers

        first = (await ask(self.pre.Info, pb.TierInfoRequest(), []))[0]
        infos, helds = {}, {}
        for name in list(first.models) or [first.model]:  # every model the preprocess tier serves
            request = pb.TierInfoRequest(model=name)
            pres = await ask(self.pre.Info, request, s.preprocess)
            pre = pres[0]
            try:
                posts = await ask(self.post.Info, request, s.postprocess)
                metas = await ask(self.model.ModelMetadata, oip.ModelMetadataRequest(name=name), s.model)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                posts, metas = [], []  # a tier without this model: nothing in common
            held = {
                "preprocess": held_by_all([list(i.fingerprints) or [i.fingerprint] for i in pres]),
                "model": held_by_all([list(m.versions) for m in metas]),
                "postprocess": held_by_all([list(i.fingerprints) or [i.fingerprint] for i in posts]),
            }
            common = [f for f in held["preprocess"] if f in held["model"] and f in held["postprocess"]]
            before = self.infos.get(name)
            if not common and (before is None or before.fingerprints):  # newly without one: say it once
                log.error("tiers serve different bundles %s; requests will be refused until they agree", held)
            elif before is not None and common and common[0] != before.fingerprint:
                log.info("%s: every tier holds %s: requests switch to it", name, common[0])
            helds[name] = held
            infos[name] = pb.TierInfo(
                tier="gateway",
                model=name,
                task=pre.task,
                fingerprint=common[0] if common else pre.fingerprint,
                streams=pre.streams,
                fingerprints=common,
                models=list(first.models) or [first.model],
            )
        self.infos, self.held = infos, helds
        self.info = infos[first.model]  # the default model's

    async def refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.tier_refresh_s)
            try:
                await self.refresh()
            except Exception as exc:  # noqa: BLE001 - a tier away for a moment: keep the last view
                log.debug("refreshing the tiers' versions failed: %s", exc)

    async def pinned(self, model: str) -> str:
        """The fingerprint this request's hops must all serve."""
        if not self.model_info(model).fingerprints:
            await self.refresh()  # they may agree by now
        info = self.model_info(model)
        if not info.fingerprints:
            held = "; ".join(f"{tier}: {', '.join(f) or 'none'}" for tier, f in self.held[info.model].items())
            raise BundleMismatch(
                f"bundle mismatch: the tiers hold no bundle in common ({held}); "
                "all tiers must be loaded from the same serving bundle"
            )
        return info.fingerprints[0]

    def model_info(self, model: str) -> pb.TierInfo:
        """What the gateway knows of model `model` (empty: the default one)."""
        if self.info is None:
            raise ModelNotReady("gateway is still connecting to its tiers")
        if not model:
            return self.info
        if model not in self.infos:
            served = ", ".join(map(repr, self.infos))
            raise ModelNotFound(f"model {shown(model)} is not served here; this gateway serves {served}")
        return self.infos[model]


def mismatch(exc: grpc.aio.AioRpcError) -> bool:
    """A tier refused a version it does not hold (before doing any work)."""
    return exc.code() == grpc.StatusCode.FAILED_PRECONDITION and "bundle mismatch" in (exc.details() or "")


def held_by_all(answers: list[list[str]]) -> list[str]:
    """The versions every replica asked holds: the replicas' current ones first, in the order they came."""
    ordered = list(dict.fromkeys([a[0] for a in answers if a] + [f for a in answers for f in a[1:]]))
    return [f for f in ordered if all(f in a for a in answers)]
