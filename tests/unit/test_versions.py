"""The versions a tier holds (`splitserve.core.tier.BundleTier`): which one a request gets, and
when an old one is unloaded. No models: the stages are stand-ins."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from splitserve.core.errors import BundleMismatch, ModelNotFound
from splitserve.core.settings import BundleServerSettings
from splitserve.core.tier import BundleTier, Loaded


def _version(name: str, fingerprint: str) -> Loaded:
    bundle = SimpleNamespace(fingerprint=fingerprint, root=Path(f"/nowhere/{fingerprint}"))
    return Loaded(name, bundle, runtime=None)  # type: ignore[arg-type]


def _tier(retire_after_s: float = 0.0) -> BundleTier:
    tier = BundleTier(BundleServerSettings(bundle_uri="unused", retire_after_s=retire_after_s))
    new, old, other = _version("m", "new"), _version("m", "old"), _version("other", "o1")
    tier.versions, tier.sources = [new, old, other], {"m": "uri-m", "other": "uri-other"}
    return tier


def test_a_request_gets_the_version_it_names() -> None:
    tier = _tier()
    assert tier.ready().fingerprint == "new"  # the default model's current version
    assert tier.ready("old").fingerprint == "old"
    assert tier.ready(name="other").fingerprint == "o1"
    with pytest.raises(
        BundleMismatch, match=r"^bundle mismatch: the request is for bundle 'zzz', this tier serves new, old"
    ):
        tier.ready("zzz")
    with pytest.raises(BundleMismatch):
        tier.ready("o1")  # another model's version
    with pytest.raises(ModelNotFound, match=r"^model 'nope' is not served here; this tier serves 'm', 'other'"):
        tier.ready(name="nope")


def test_the_old_version_goes_once_nothing_uses_it() -> None:
    tier = _tier(retire_after_s=0.2)
    assert asyncio.run(tier.retire()) == []  # the new version served nothing yet: the gateway may still pin the old
    with tier.using("old"):
        with tier.using("new"):
            pass
        assert asyncio.run(tier.retire()) == []  # a request is still on the old one
    assert asyncio.run(tier.retire()) == []  # the old one was used after the new one
    with tier.using("new"):
        pass
    assert asyncio.run(tier.retire()) == []  # used too recently
    time.sleep(0.25)
    assert asyncio.run(tier.retire()) == ["old"]
    assert [v.fingerprint for v in tier.versions] == ["new", "o1"]  # the other model keeps its only version


def test_unload_stops_serving_a_model() -> None:
    tier = _tier()
    assert asyncio.run(tier.unload("other")) == ["o1"]
    with pytest.raises(ModelNotFound):
        tier.ready(name="other")
    with pytest.raises(ModelNotFound):
        asyncio.run(tier.unload("other"))
    assert list(tier.sources) == ["m", "other"]  # where it came from is kept: RepositoryModelLoad reloads it


def test_settings_check_the_watched_uri_and_the_bundles() -> None:
    with pytest.raises(ValueError, match="--watch-alias follows a registry alias: give models:/NAME@ALIAS"):
        BundleServerSettings(bundle_uri="/a/folder", watch_alias=True)
    assert BundleServerSettings(bundle_uri="models:/ner@champion", watch_alias=True).watch_alias
    with pytest.raises(ValueError, match="--bundle takes NAME=URI, not 'nope'"):
        BundleServerSettings(bundle_uri="x", bundle=["nope"])
