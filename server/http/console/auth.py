"""Who may see the console: the API's tokens (README, Security). A token needs the `read` role
(`operator` includes it); a scoped token sees only its models. With auth off the HTTP side only
listens on loopback, and the console answers anyone there."""

from __future__ import annotations

from aiohttp import web

from ...api.auth import Authenticator
from ...errors import ClosedLoopError

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
