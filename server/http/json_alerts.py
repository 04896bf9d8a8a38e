"""POST /v1/alerts and GET /v1/alerts/{id}: AlertService for callers without gRPC (curl, a script).

Bodies are protobuf's JSON mapping of CreateAlertRequest and Alert (field names in lowerCamelCase or
as in the .proto, enums by name, timestamps as RFC 3339). The requests go to the AlertServicer
itself, so validation, idempotency (request_id) and errors are gRPC's, statuses mapped by errors.py.
"""

from __future__ import annotations

from aiohttp import web
from google.protobuf import json_format

from closedloop.v1 import alert_pb2

from ..api.alerts import AlertServicer
from ..api.validation import malformed, pending_malformed
from ..errors import FieldViolation, InvalidArgument


def parse_json(text: str, message):
    """`message` filled from protobuf JSON; a body that is not one is INVALID_ARGUMENT on `body`."""
    try:
        return json_format.Parse(text, message)
    except json_format.ParseError as exc:
        raise InvalidArgument(FieldViolation("body", f"not a {type(message).__name__} in JSON: {exc}")) from None


def json_reply(message, status: int = 200) -> web.Response:
    return web.Response(text=json_format.MessageToJson(message, indent=None), status=status,
                        content_type="application/json")


class JsonAlerts:
    def __init__(self, pool, ingestor) -> None:
        self.alerts = AlertServicer(pool, ingestor)

    async def create(self, request: web.Request) -> web.Response:
        create = parse_json(await request.text(), alert_pb2.CreateAlertRequest())
        # What gRPC's interceptor checks on every request (NUL, non-finite numbers), handed to the
        # handler's validation the same way, so both doors refuse the same input with the same fields.
        pending_malformed.set(malformed(create))
        return json_reply(await self.alerts.CreateAlert(create, None))

    async def get(self, request: web.Request) -> web.Response:
        get = alert_pb2.GetAlertRequest(id=request.match_info["id"])
        return json_reply(await self.alerts.GetAlert(get, None))
