"""Generated protobuf/gRPC code is committed; it must be what protoc makes of the .proto files."""

from __future__ import annotations

from pathlib import Path

from protos.generate import generate

PROTOS = Path(__file__).resolve().parents[2] / "protos"


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    fresh = {p.name: p.read_text() for p in generate(tmp_path)}
    committed = {p.name: p.read_text() for p in PROTOS.glob("*_pb2*.py*")}
    assert sorted(fresh) == sorted(committed)
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"regenerate with `python -m protos.generate`: stale {stale}"
