"""Every log line of a request carries that request's fields (logging_setup.bind_request), and only its."""

from __future__ import annotations

import asyncio
import io
import json

import structlog

from closedloop.server.logging_setup import bind_request, configure_logging


def _lines(buf: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


async def _request(fields: dict, event: str, log) -> None:
    bind_request(**fields)
    await asyncio.sleep(0.01)  # the other request binds and logs meanwhile
    log.info(event)


def test_each_request_logs_its_own_fields_and_an_event_may_override_them():
    buf = io.StringIO()
    configure_logging("json", "info")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=buf))
    try:
        log = structlog.get_logger("test")

        async def main():
            await asyncio.gather(
                asyncio.create_task(_request({"rpc": "CreateAlert", "request_id": "r-1"}, "grpc", log)),
                asyncio.create_task(_request({"http": "POST /v1/alerts", "request_id": "r-2"}, "http", log)))
            bind_request(rpc="GetAlert", request_id="r-3")
            log.info("explicit", request_id="mine")
            bind_request(http="GET /metrics", request_id="r-4")  # replaces the previous request's fields
            log.info("next")

        asyncio.run(main())
    finally:
        structlog.reset_defaults()
    by_event = {line["event"]: line for line in _lines(buf)}
    assert (by_event["grpc"]["rpc"], by_event["grpc"]["request_id"]) == ("CreateAlert", "r-1")
    assert (by_event["http"]["http"], by_event["http"]["request_id"]) == ("POST /v1/alerts", "r-2")
    assert "http" not in by_event["grpc"] and "rpc" not in by_event["http"]
    assert by_event["explicit"]["request_id"] == "mine" and by_event["explicit"]["rpc"] == "GetAlert"
    assert by_event["next"]["http"] == "GET /metrics" and "rpc" not in by_event["next"]
