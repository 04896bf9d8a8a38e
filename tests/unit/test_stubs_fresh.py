"""The committed stubs in clients/v1 are exactly what the .proto files generate now."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location("generate_protos", ROOT / "protos" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["generate_protos"] = module
    spec.loader.exec_module(module)
    return module


def test_generated_stubs_match_the_protos(tmp_path):
    produced = _generator().generate(tmp_path)
    assert produced, "protoc produced nothing"
    stale = []
    for f in produced:
        committed = ROOT / "clients" / "v1" / f.name
        if not committed.exists() or committed.read_bytes() != f.read_bytes():
            stale.append(f.name)
    assert not stale, f"stale stubs {stale}: run `python protos/generate.py` and commit clients/v1"


def test_every_proto_has_stubs():
    protos = {p.stem for p in (ROOT / "protos" / "closedloop" / "v1").glob("*.proto")}
    stubs = {p.name.removesuffix("_pb2.py") for p in (ROOT / "clients" / "v1").glob("*_pb2.py")}
    assert protos == stubs
