"""Regenerate the Python stubs in clients/v1 from protos/closedloop/v1/*.proto.

    python protos/generate.py

grpc_tools writes into <out>/closedloop/v1/ (the proto package path); the installed package maps
`closedloop` to clients/, so we generate into a scratch folder and copy the files into clients/v1.
tests/unit/test_stubs_fresh.py runs the same generation and fails when the committed stubs differ.
"""

from __future__ import annotations

import pathlib
import shutil
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
TARGET = ROOT / "clients" / "v1"


def generate(out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Run protoc into out_dir; return the generated files (flat, in out_dir)."""
    from grpc_tools import protoc
    import grpc_tools

    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    sources = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / "closedloop" / "v1").glob("*.proto"))
    with tempfile.TemporaryDirectory() as scratch:
        args = ["protoc", f"-I{PROTOS}", f"-I{include}", f"--python_out={scratch}",
                f"--grpc_python_out={scratch}", f"--pyi_out={scratch}", *sources]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        produced = []
        for f in sorted((pathlib.Path(scratch) / "closedloop" / "v1").iterdir()):
            dest = out_dir / f.name
            shutil.copyfile(f, dest)
            produced.append(dest)
    return produced


if __name__ == "__main__":
    files = generate(TARGET)
    print(f"wrote {len(files)} files to {TARGET}", file=sys.stderr)
