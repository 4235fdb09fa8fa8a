"""The graph cache of `splitserve export` (`splitserve.export.onnx.cache`): a model exported
again is copied, byte for byte, in a fraction of the time; any change of the model's weights or
config (or the exporter's code) is a new entry; the cache can be turned off, and it is bounded."""

from __future__ import annotations

import time

import pytest
import torch
import transformers

from splitserve.export.onnx import cache, export_graphs
from tests.support.zoo.encoders import save_tiny


@pytest.fixture
def model(tmp_path):
    directory = save_tiny("text-classification", "bert", tmp_path / "model")
    return transformers.AutoModelForSequenceClassification.from_pretrained(str(directory)).eval()


def test_a_model_exported_again_is_copied(model, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SPLITSERVE_EXPORT_CACHE", str(tmp_path / "cache"))
    t = time.perf_counter()
    first = export_graphs(model, "encoder", tmp_path / "a", ("logits",))
    traced_s = time.perf_counter() - t
    t = time.perf_counter()
    again = export_graphs(model, "encoder", tmp_path / "b", ("logits",))
    copied_s = time.perf_counter() - t
    print(f"\nexported in {traced_s:.1f}s, again from the cache in {copied_s:.2f}s")
    assert first == again == "model.onnx"
    assert (tmp_path / "a" / first).read_bytes() == (tmp_path / "b" / again).read_bytes()
    assert len([p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]) == 1

    with torch.no_grad():  # another weight: another model, another entry
        next(model.parameters())[0, 0] += 1.0
    key = cache.key(model, "encoder", ("logits",))
    assert not (tmp_path / "cache" / key).exists()
    export_graphs(model, "encoder", tmp_path / "c", ("logits",))
    assert (tmp_path / "cache" / key / cache.MAIN).read_text() == "model.onnx"
    assert cache.key(model, "encoder", ("logits", "other")) != key  # the outputs are part of it


def test_off_and_bounded(model, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SPLITSERVE_EXPORT_CACHE", "off")
    export_graphs(model, "encoder", tmp_path / "a", ("logits",))
    assert cache.cache_dir() is None
    monkeypatch.setenv("SPLITSERVE_EXPORT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SPLITSERVE_EXPORT_CACHE_BYTES", "1")  # room for the newest entry only
    export_graphs(model, "encoder", tmp_path / "b", ("logits",))
    with torch.no_grad():
        next(model.parameters())[0, 0] += 1.0
    export_graphs(model, "encoder", tmp_path / "c", ("logits",))
    entries = [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]
    assert [p.name for p in entries] == [cache.key(model, "encoder", ("logits",))]


def test_the_folder_a_model_was_read_from_is_not_part_of_the_key(model, tmp_path) -> None:
    """The same model logged twice (each MLflow run its own folder), or saved again, is one entry."""
    model.save_pretrained(str(tmp_path / "elsewhere"))
    again = transformers.AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "elsewhere")).eval()
    assert again.config._name_or_path != model.config._name_or_path
    assert cache.key(again, "encoder", ("logits",)) == cache.key(model, "encoder", ("logits",))
