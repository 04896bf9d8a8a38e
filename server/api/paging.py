"""Opaque page tokens (AIP-158): a keyset cursor plus a fingerprint of the filters it belongs to.

Tokens are base64 JSON; the fingerprint makes a token reused with other filters an error instead
of a silently wrong page.
"""

from __future__ import annotations

import base64
import hashlib
import json

from ..errors import FieldViolation, InvalidArgument


def _fingerprint(filters: dict) -> str:
    return hashlib.sha256(json.dumps(filters, sort_keys=True, default=str).encode()).hexdigest()[:16]


def encode(cursor: dict, filters: dict) -> str:
    raw = json.dumps({"c": cursor, "f": _fingerprint(filters)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str, filters: dict) -> dict | None:
    """The cursor of a token, None for an empty token; InvalidArgument for a bad or foreign one."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        cursor, fingerprint = data["c"], data["f"]
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument(FieldViolation("page_token", "not a token this server issued")) from None
    if fingerprint != _fingerprint(filters):
        raise InvalidArgument(FieldViolation("page_token", "was issued for different filters"))
    if not isinstance(cursor, dict):
        raise InvalidArgument(FieldViolation("page_token", "not a token this server issued"))
    return cursor
