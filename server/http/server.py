"""The HTTP side (--http-listen): aiohttp in the gRPC server's event loop, with gRPC's auth and errors.

Routes:
    GET  /metrics                Prometheus exposition (metrics_page.py)           role read
    GET  /healthz, /readyz       gRPC health mirrored; readyz also asks the database  public
    POST /api/v1/alertmanager    Alertmanager webhook receiver (alertmanager.py)   role ingest
    POST /v1/alerts              CreateAlert in protobuf's JSON mapping (json_alerts.py)  role ingest
    GET  /v1/alerts/{id}         GetAlert, same mapping                            role read

Every protected route names the gRPC method whose role it needs, so one token file and one
Authenticator (api/auth.py) govern both sides. Without auth the side only listens on loopback
(checked by app.py before anything starts); with --tls-cert it serves HTTPS with the same certificate.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, Awaitable, Callable

import structlog
from aiohttp import web

from .. import metrics
from ..db.pool import database_error
from ..api.auth import bind_caller
from ..errors import ClosedLoopError
from ..logging_setup import bind_request
from ..store import clock
from . import alertmanager, json_alerts, metrics_page
from .console import add_console_routes
from .console.auth import token_authorizer
from .console.web import ConsoleDeps
from .errors import error_response

log = structlog.get_logger(__name__)

CREATE_ALERT = "/closedloop.v1.AlertService/CreateAlert"
GET_ALERT = "/closedloop.v1.AlertService/GetAlert"
# /metrics is no RPC; api/auth.py gives this name the read role.
SCRAPE = "/closedloop.http/Metrics"
READY_TIMEOUT_S = 2.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HttpSide:
    """Started and stopped by app.py like its other background parts (start(), stop())."""

    def __init__(self, listen: str, server: Any, authenticator: Any | None) -> None:
        self.host, port = listen.rsplit(":", 1)
        self.host = self.host.strip("[]")
        self.port = int(port)
        self.server = server  # app.ClosedLoopServer: pool, ingestor, rules, serving
        self.authenticator = authenticator
        self._runner: web.AppRunner | None = None
        # (route path, HTTP verb) -> the gRPC method whose role it needs; None: public.
        self._methods: dict[tuple[str, str], str | None] = {}

    def application(self) -> web.Application:
        app = web.Application(client_max_size=self.server.settings.max_message_bytes,
                              middlewares=[self._guard])
        am = alertmanager.Receiver(self.server.settings, self.server.pool, self.server.ingestor)
        alerts = json_alerts.JsonAlerts(self.server.pool, self.server.ingestor)
        scrape = metrics_page.MetricsPage(self.server)
        routes = [
            ("GET", "/metrics", scrape.handle, SCRAPE),
            ("GET", "/healthz", self._healthz, None),
            ("GET", "/readyz", self._readyz, None),
            ("POST", "/api/v1/alertmanager", am.handle, CREATE_ALERT),
            ("POST", "/v1/alerts", alerts.create, CREATE_ALERT),
            ("GET", "/v1/alerts/{id}", alerts.get, GET_ALERT),
        ]
        for verb, path, handler, method in routes:
            app.router.add_route(verb, path, handler)
            self._methods[path, verb] = method
        # The console checks its own callers (a read token, from the header or its sign-in cookie).
        add_console_routes(app, ConsoleDeps(pool=self.server.pool, rules=self.server.rules, facts=self.server.facts,
                                            authorize=token_authorizer(self.authenticator)))
        return app

    async def start(self) -> None:
        s = self.server.settings
        context = None
        if s.tls_cert:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(s.tls_cert, s.tls_key)
        self._runner = web.AppRunner(self.application(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=context, reuse_port=False)
        await site.start()
        self.port = self._runner.addresses[0][1]  # the bound port when 0 was asked for
        log.info("http.listening", host=self.host, port=self.port, tls=context is not None,
                 auth="tokens" if self.authenticator else "off (loopback only)")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Auth, request id, and the one error map: ClosedLoopError -> its status; bugs -> 500, logged once."""
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        bind_request(http=f"{request.method} {route}", request_id=request.headers.get("x-request-id", ""))
        try:
            method = self._methods.get((route, request.method))
            bind_caller(None)  # the caller the handlers' model-scope checks see (auth.require_model)
            if method is not None and self.authenticator is not None:
                token = self.authenticator.identify(request.headers.get("Authorization"))
                bind_caller(token)
                self.authenticator.authorize(token, method)
            response = await handler(request)
        except web.HTTPException as exc:  # aiohttp's own answers: 404 for unknown paths, 405, 413
            metrics.http_requests(route, str(exc.status)).inc()
            raise
        except Exception as exc:  # noqa: BLE001 - mapped below
            exc = database_error(exc) or exc
            if not isinstance(exc, ClosedLoopError):
                log.exception("http.internal_error")
                response = web.json_response({"error": {"code": 500, "status": "INTERNAL",
                                                        "message": "internal error; the server log has the details"}},
                                             status=500)
            else:
                log.info("http.rejected", code=exc.code.name, error=exc.message[:500])
                response = error_response(exc)
        metrics.http_requests(route, str(response.status)).inc()
        return response

    async def _healthz(self, request: web.Request) -> web.Response:
        """The gRPC health status of the whole server ("" service): 200 SERVING, 503 otherwise."""
        status = self.server.serving_status
        return web.json_response({"status": status}, status=200 if status == "SERVING" else 503)

    async def _readyz(self, request: web.Request) -> web.Response:
        """SERVING and the database answers within READY_TIMEOUT_S."""
        status = self.server.serving_status
        database = "unknown"
        if status == "SERVING":
            try:
                async with asyncio.timeout(READY_TIMEOUT_S):
                    async with self.server.pool.acquire() as conn:
                        await clock.db_now(conn)
                database = "ok"
            except Exception as exc:  # noqa: BLE001 - any failure means not ready
                database = f"unavailable: {type(exc).__name__}"
        ready = status == "SERVING" and database == "ok"
        return web.json_response({"status": status, "database": database}, status=200 if ready else 503)
