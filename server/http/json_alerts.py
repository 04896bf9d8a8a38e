"""POST /v1/alerts and GET /v1/alerts/{id}: AlertService for callers without gRPC (curl, a script).

Bodies are protobuf's JSON mapping of CreateAlertRequest and Alert (field names in lowerCamelCase or
as in the .proto, enums by name, timestamps as RFC 3339), read and written by alert_json.py. The
requests go to the AlertServicer itself, so validation, idempotency (request_id) and errors are
gRPC's, statuses mapped by errors.py.
"""

from __future__ import annotations

from aiohttp import web

from closedloop.v1 import alert_pb2

from ..api.alerts import AlertServicer, reply_message
from ..api.validation import pending_malformed
from .alert_json import alert_json, created_alert_json, parse_create_request_checked


def json_reply(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json", charset="utf-8")


def alert_reply(alert: alert_pb2.Alert) -> web.Response:
    return json_reply(alert_json(alert))


class JsonAlerts:
    def __init__(self, pool, ingestor) -> None:
        self.alerts = AlertServicer(pool, ingestor)

    async def create(self, request: web.Request) -> web.Response:
        create = parse_create_request_checked(await request.text())
        # What gRPC's interceptor checks on every request (NUL, non-finite numbers), handed to the
        # handler's validation the same way, so both doors refuse the same input with the same fields.
        pending_malformed.set(create.violations)
        result = await self.alerts.ingest(create.request)
        if create.sent is not None and result.created and not result.actions:  # the common reply
            return json_reply(created_alert_json(create.sent, result.alert))
        return alert_reply(reply_message(result, create.request.alert))

    async def get(self, request: web.Request) -> web.Response:
        get = alert_pb2.GetAlertRequest(id=request.match_info["id"])
        return alert_reply(await self.alerts.GetAlert(get, None))
