"""Exported graphs kept by the content of what was exported: exporting the same model again
(another `--set`, `--quantize` or template, a re-export after a failed gate, the next test of a
session) copies its graphs instead of tracing it again (seconds for a tiny model, minutes for a
GPT-2-small-sized one).

The key is a hash of everything the graphs depend on: the graph family and outputs, this
exporter's own source files, the torch, transformers, onnx and onnxscript versions, the model's
class and config (less the folder it was read from), and every parameter's and buffer's bytes. Entries live in
`$SPLITSERVE_EXPORT_CACHE` (`off`: no cache), else `$XDG_CACHE_HOME/splitserve/onnx` (else
`~/.cache/...`), each written whole into a staging folder and renamed into place; past
`$SPLITSERVE_EXPORT_CACHE_BYTES` (4 GB) the least recently used go.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

MAIN = "main.txt"  # an entry's file naming the graph the model tier runs
DEFAULT_MAX_BYTES = 4 * 10**9


def cache_dir() -> Path | None:
    """Where entries live, or None when the cache is off."""
    configured = os.environ.get("SPLITSERVE_EXPORT_CACHE")
    if configured == "off":
        return None
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "splitserve" / "onnx"


def key(model: Any, family: str, outputs: tuple[str, ...]) -> str:
    """The hash of everything the exported graphs depend on."""
    from importlib.metadata import version

    import torch

    digest = hashlib.sha256()
    facts = {
        "family": family,
        "outputs": list(outputs),
        "versions": {name: version(name) for name in ("torch", "transformers", "onnx", "onnxscript")},
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "config": _config(model),
    }
    digest.update(json.dumps(facts, sort_keys=True).encode())
    for source in sorted(Path(__file__).parent.glob("*.py")):  # the exporter's own code
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    for name, tensor in sorted({**dict(model.named_parameters()), **dict(model.named_buffers())}.items()):
        data = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{data.dtype}:{list(tensor.shape)}".encode())
        if data.numel():
            digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:32]


def _config(model: Any) -> str:
    """The model's config as JSON, less where it was loaded from (`_name_or_path`): the same
    model logged twice, or read from another folder, is the same graph."""
    config = json.loads(model.config.to_json_string(use_diff=False))
    config.pop("_name_or_path", None)
    return json.dumps(config, sort_keys=True)


def exported(model: Any, family: str, outputs: tuple[str, ...], onnx_dir: Path, export: Callable[[], str]) -> str:
    """The graphs of `model` in `onnx_dir`: copied from the cache, else `export()`ed (and kept);
    returns the file the model tier runs."""
    root = cache_dir()
    if root is None:
        return export()
    entry = root / key(model, family, outputs)
    if (entry / MAIN).is_file():
        onnx_dir.mkdir(parents=True, exist_ok=True)
        for file in entry.iterdir():
            if file.name != MAIN:
                shutil.copy2(file, onnx_dir / file.name)
        os.utime(entry)  # recently used
        return (entry / MAIN).read_text().strip()
    main = export()
    _store(root, entry, onnx_dir, main)
    return main


def _store(root: Path, entry: Path, onnx_dir: Path, main: str) -> None:
    """Keep `onnx_dir`'s graphs as `entry` (whole, or not at all), then trim the cache."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
        for file in onnx_dir.iterdir():
            shutil.copy2(file, staging / file.name)
        (staging / MAIN).write_text(main)
        try:
            os.replace(staging, entry)
        except OSError:  # another export stored it meanwhile
            shutil.rmtree(staging, ignore_errors=True)
        _trim(root, int(os.environ.get("SPLITSERVE_EXPORT_CACHE_BYTES", DEFAULT_MAX_BYTES)))
    except OSError:  # a cache that cannot be written costs the next export time, nothing else
        pass


def _trim(root: Path, most: int) -> None:
    entries = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.stat().st_mtime
    )
    sizes = {p: sum(f.stat().st_size for f in p.iterdir()) for p in entries}
    total = sum(sizes.values())
    for old in entries[:-1]:  # never the newest
        if total <= most:
            break
        shutil.rmtree(old, ignore_errors=True)
        total -= sizes[old]
