"""The console on a port of its own, next to a running ClosedLoopServer: what `closedloop demo` and
the browser tests use until the HTTP side (issue 14) hosts the console on --http-listen.

Its caller check is the API's: the same tokens file, a token needs the `read` role (`operator`
includes it), and a scoped token sees only its models. With auth off it answers anyone, so it only
listens on loopback then, like the gRPC side.
"""

from __future__ import annotations

import ipaddress

from aiohttp import web

from ...api.auth import Authenticator, load_tokens
from ...errors import ClosedLoopError, ConfigError
from . import add_console_routes
from .web import ConsoleDeps

READ_ROLES = frozenset({"read", "operator"})


def token_authorizer(authenticator: Authenticator | None):
    """authorize(request) -> Token (None when auth is off) for ConsoleDeps, from the API's tokens."""

    def authorize(request: web.Request):
        if authenticator is None:
            return None
        try:
            token = authenticator.identify(request.headers.get("Authorization"))
        except ClosedLoopError as exc:
            raise web.HTTPUnauthorized(text=str(exc)) from None
        if not token.roles & READ_ROLES:
            raise web.HTTPForbidden(text=f"token {token.name!r} lacks the read role the console needs")
        return token

    return authorize


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class StandaloneConsole:
    """An aiohttp site serving only the console for `server` (a started app.ClosedLoopServer)."""

    def __init__(self, server, listen: str = "127.0.0.1:0") -> None:
        self.server = server
        self.host, port = listen.rsplit(":", 1)
        self.port = int(port)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    async def start(self) -> str:
        settings = self.server.settings
        if settings.auth_tokens is None and not _is_loopback(self.host):
            raise ConfigError(f"console listen {self.host}: without --auth-tokens the console only listens on loopback")
        authenticator = Authenticator(load_tokens(settings.auth_tokens)) if settings.auth_tokens else None
        app = web.Application()
        add_console_routes(app, ConsoleDeps(pool=self.server.pool, rules=self.server.rules, facts=self.server.facts,
                                            authorize=token_authorizer(authenticator)))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
