"""Regenerate the committed protobuf/gRPC modules: `python -m protos.generate`.

Generated modules import each other as `protos.<name>_pb2`, so the package works from any
working directory once the project is installed.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from grpc_tools import protoc

HERE = Path(__file__).resolve().parent
PROTOS = ("grpc_predict_v2.proto", "splitserve.proto")


def generate(out_dir: Path = HERE) -> list[Path]:
    """Run protoc on every .proto into out_dir and return the generated files."""
    include = Path(protoc.__file__).parent / "_proto"
    for name in PROTOS:
        args = [
            "protoc",
            f"-I{HERE}",
            f"-I{include}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(HERE / name),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {name}")
    generated = sorted(out_dir.glob("*_pb2*.py*"))
    for path in generated:
        # protoc writes `import x_pb2`; make it a package-relative import.
        text = re.sub(r"^import (\w+_pb2) as", r"from protos import \1 as", path.read_text(), flags=re.M)
        path.write_text(text)
    return generated


if __name__ == "__main__":
    for p in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(p)
