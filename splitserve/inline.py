"""The preprocess and postprocess tiers' servicers for a gateway with `--inline-stages`: the
program that starts such a gateway builds them and hands them in (a tier never imports another)."""

from __future__ import annotations

from typing import Any

from postprocess_svc.server import PostprocessTier
from postprocess_svc.settings import PostprocessSettings
from preprocess_svc.server import PreprocessTier
from preprocess_svc.settings import PreprocessSettings


def inline_servicers(bundle_uri: str) -> tuple[PreprocessTier, PostprocessTier]:
    """Not loaded yet (the gateway loads them). Their settings, from the SPLITSERVE_PRE_* /
    SPLITSERVE_POST_* environment, apply."""
    settings: Any = (PreprocessSettings, PostprocessSettings)  # pydantic-settings fill in the rest from env
    return PreprocessTier(settings[0](bundle_uri=bundle_uri)), PostprocessTier(settings[1](bundle_uri=bundle_uri))
