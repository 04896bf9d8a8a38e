"""Two storable forms of the monitor's documents (profiles, window partials), never pickles.

The documents are plain dicts whose only non-JSON values are `bytes` (serialized sketches):
- `to_json` / `from_json`: fully JSON-able (bytes become {"$b64": ...}), for a jsonb column or a report;
- `to_bytes` / `from_bytes`: one compact blob for a bytea column: a JSON header in which each bytes value
  is replaced by {"$blob": i}, followed by the raw blobs, so sketches are stored without base64's third.
"""

from __future__ import annotations

import base64
import json
import struct

_LEN = struct.Struct(">I")
_MAGIC = b"CLM1"


def _walk(doc, leaf):
    if isinstance(doc, dict):
        if len(doc) == 1 and next(iter(doc)) in ("$b64", "$blob"):
            return leaf(doc)
        return {key: _walk(value, leaf) for key, value in doc.items()}
    if isinstance(doc, list):
        return [_walk(value, leaf) for value in doc]
    return leaf(doc)


def to_json(doc: dict) -> dict:
    return _walk(doc, lambda v: {"$b64": base64.b64encode(v).decode("ascii")} if isinstance(v, bytes) else v)


def from_json(doc: dict) -> dict:
    return _walk(doc, lambda v: base64.b64decode(v["$b64"]) if isinstance(v, dict) else v)


def to_bytes(doc: dict) -> bytes:
    blobs: list[bytes] = []

    def stash(value):
        if isinstance(value, bytes):
            blobs.append(value)
            return {"$blob": len(blobs) - 1}
        return value

    header = json.dumps(_walk(doc, stash), separators=(",", ":")).encode()
    parts = [_MAGIC, _LEN.pack(len(header)), header]
    for blob in blobs:
        parts += [_LEN.pack(len(blob)), blob]
    return b"".join(parts)


def from_bytes(data: bytes) -> dict:
    if data[:4] != _MAGIC:
        raise ValueError("not a closedloop monitor document")
    (size,) = _LEN.unpack_from(data, 4)
    header = json.loads(data[8 : 8 + size])
    blobs, at = [], 8 + size
    while at < len(data):
        (size,) = _LEN.unpack_from(data, at)
        blobs.append(bytes(data[at + 4 : at + 4 + size]))
        at += 4 + size
    return _walk(header, lambda v: blobs[v["$blob"]] if isinstance(v, dict) else v)
