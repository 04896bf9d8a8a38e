"""structlog configuration: readable console lines on a terminal, JSON lines otherwise.

Event names are stable identifiers (`alert.created`, `retrain.job_started`); values go in fields.
Context bound by the interceptor (rpc, request_id) or the HTTP side (http, request_id) appears on
every line of a request: bind it with bind_request (structlog's own contextvars are not merged).
"""

from __future__ import annotations

import contextvars
import logging
import sys
from typing import Any

import structlog

# The request a log line belongs to, set once per RPC or HTTP request (bind_request). One ContextVar
# set per request, merged into an event only when something is logged: structlog's clear_contextvars
# (a walk of the whole context) + bind_contextvars (a variable per key) cost ~1.5 us per request
# before anything is logged, on every request; most requests log nothing.
_request: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("closedloop_request", default=None)


def bind_request(**fields: Any) -> None:
    """The fields every log line of the current request carries; replaces the previous request's."""
    _request.set(fields)


def merge_request(logger: Any, method: str, event_dict: dict) -> dict:
    """structlog processor: the current request's fields, unless the event sets them itself."""
    fields = _request.get()
    if fields:
        for key, value in fields.items():
            event_dict.setdefault(key, value)
    return event_dict


def configure_logging(fmt: str = "auto", level: str = "info") -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer = structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            merge_request,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info if not use_console else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr)
