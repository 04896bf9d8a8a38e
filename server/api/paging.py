"""Opaque page tokens (AIP-158): a keyset cursor plus a fingerprint of the filters it belongs to.

Tokens are base64 JSON; the fingerprint makes a token reused with other filters an error instead
of a silently wrong page. Tokens are not signed, so a client can forge one: `decode` checks every
cursor value against the type the query binds it as, and anything else is a bad page_token, never
a driver error.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from typing import Any, Callable

from ..errors import FieldViolation, InvalidArgument
from .validation import MAX_ID, MODEL_ID


def _fingerprint(filters: dict) -> str:
    return hashlib.sha256(json.dumps(filters, sort_keys=True, default=str).encode()).hexdigest()[:16]


def encode(cursor: dict, filters: dict) -> str:
    raw = json.dumps({"c": cursor, "f": _fingerprint(filters)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# Cursor value parsers: the value as the query binds it, or ValueError.

def bigint(value: Any) -> int:
    if type(value) is not int or not -MAX_ID - 1 <= value <= MAX_ID:  # noqa: E721 - bool is no id
        raise ValueError(value)
    return value


def model_id(value: Any) -> str:
    if not isinstance(value, str) or not MODEL_ID.match(value):
        raise ValueError(value)
    return value


def timestamp(value: Any) -> dt.datetime:
    if not isinstance(value, str):
        raise ValueError(value)
    parsed = dt.datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(value)
    return parsed


def decode(token: str, filters: dict, fields: dict[str, Callable[[Any], Any]]) -> dict | None:
    """The cursor of a token, None for an empty token; InvalidArgument for a bad or foreign one.

    `fields`: the cursor's keys and the parser of each (bigint, model_id, timestamp); a token whose
    cursor has other keys or values those parsers refuse was not issued by this server."""
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
    try:
        if not isinstance(cursor, dict) or cursor.keys() != fields.keys():
            raise ValueError(cursor)
        return {key: parse(cursor[key]) for key, parse in fields.items()}
    except (ValueError, TypeError, OverflowError):
        raise InvalidArgument(FieldViolation("page_token", "not a token this server issued")) from None
