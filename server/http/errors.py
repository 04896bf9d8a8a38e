"""Errors on the HTTP side: the same ClosedLoopError map as gRPC, rendered as Google's JSON error.

The body is what Google's HTTP/JSON APIs answer (AIP-193):
    {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "...",
               "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest",
                            "fieldViolations": [{"field": "alert.model_id", "description": "required"}]}]}}
so a client that reads gRPC's BadRequest reads this too. The HTTP status comes from the gRPC code
with the mapping of google/rpc/code.proto.
"""

from __future__ import annotations

import grpc
from aiohttp import web
from google.protobuf import json_format

from ..errors import ClosedLoopError, to_status

HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def error_body(code: grpc.StatusCode, message: str, details: list | None = None) -> dict:
    error = {"code": HTTP_STATUS[code], "status": code.name, "message": message}
    if details:
        error["details"] = details
    return {"error": error}


def error_response(exc: ClosedLoopError) -> web.Response:
    code, message, status = to_status(exc)
    details = [json_format.MessageToDict(d) for d in status.details] if status is not None else None
    headers = {"WWW-Authenticate": "Bearer"} if code == grpc.StatusCode.UNAUTHENTICATED else None
    return web.json_response(error_body(code, message, details), status=HTTP_STATUS[code], headers=headers)
