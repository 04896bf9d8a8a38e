"""The console's plumbing: its dependencies, the routes, the caller check, templates, headers, static files."""

from __future__ import annotations

import datetime as dt
import inspect
import json
import mimetypes
from dataclasses import dataclass
from importlib import resources
from typing import Any, Awaitable, Callable

import asyncpg
import jinja2
import structlog
from aiohttp import web

from closedloop.dsl.schema import LEVEL_NAMES

from ...errors import ServerError

log = structlog.get_logger(__name__)

# The cookie the sign-in form sets; it holds the bearer token, never readable by script.
TOKEN_COOKIE = "closedloop_console_token"
STATIC_PREFIX = "/console/static/"

# No inline script, no eval, nothing from elsewhere. uPlot styles its elements through the CSSOM,
# which style-src does not restrict; the charts' data travel in <script type="application/json">
# blocks, which are never executed.
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True)
class ConsoleDeps:
    """What the pages read: the pool, the active rules, the model facts cache, and the caller check."""

    pool: asyncpg.Pool
    rules: Any      # loop.rule_engine.RuleEngine
    facts: Any      # loop.model_cache.ModelFactsCache
    authorize: Callable[[web.Request], Any | Awaitable[Any]]


DEPS_KEY = web.AppKey("closedloop_console_deps", ConsoleDeps)
ENV_KEY = web.AppKey("closedloop_console_templates", jinja2.Environment)


def caller_scopes(caller) -> tuple[str, ...] | None:
    return getattr(caller, "scopes", None) if caller is not None else None


def may_see(caller, model_id: str) -> bool:
    allows = getattr(caller, "allows", None)
    if allows is not None:
        return allows(model_id)
    return caller_scopes(caller) is None


def _format_time(value: dt.datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _format_number(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader(__package__, "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             enable_async=True)
    env.filters["time"] = _format_time
    env.filters["num"] = _format_number
    env.filters["severity"] = lambda v: LEVEL_NAMES.get(v, str(v))
    env.filters["pct"] = lambda v: "-" if v is None else f"{100 * v:.1f}%"
    return env


async def render(request: web.Request, template: str, status: int = 200, **context) -> web.Response:
    html = await request.app[ENV_KEY].get_template(template).render_async(
        static=STATIC_PREFIX, path=request.path, **context)
    return web.Response(text=html, status=status, content_type="text/html", headers=SECURITY_HEADERS)


async def fragments(request: web.Request, context: dict, *names: str) -> dict[str, str]:
    """Partial templates (`_NAME.html`) rendered on their own: the live JSON's sections, which the
    page itself includes, so a section has one template whether it comes with the page or later."""
    env = request.app[ENV_KEY]
    return {n: await env.get_template(f"_{n}.html").render_async(static=STATIC_PREFIX, **context) for n in names}


def json_response(data) -> web.Response:
    return web.Response(text=json.dumps(data), content_type="application/json",
                        headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})


def _with_cookie_token(request: web.Request) -> web.Request:
    """The request as `authorize` expects it: the cookie's token as a bearer header when none is sent."""
    token = request.cookies.get(TOKEN_COOKIE)
    if token and "Authorization" not in request.headers:
        headers = request.headers.copy()
        headers["Authorization"] = f"Bearer {token}"
        return request.clone(headers=headers)
    return request


async def identify(request: web.Request):
    result = request.app[DEPS_KEY].authorize(_with_cookie_token(request))
    return await result if inspect.isawaitable(result) else result


def page(handler: Callable[[web.Request, Any], Awaitable[web.StreamResponse]]):
    """A console handler: the caller is checked first; refusals and our own errors become plain pages."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            caller = await identify(request)
        except web.HTTPUnauthorized as exc:
            return await render(request, "refused.html", status=401, reason=exc.text or "sign in first",
                                sign_in=True)
        except web.HTTPForbidden as exc:
            return await render(request, "refused.html", status=403, reason=exc.text or "not allowed",
                                sign_in=False)
        try:
            return await handler(request, caller)
        except (web.HTTPNotFound, web.HTTPBadRequest) as exc:
            return await render(request, "refused.html", status=exc.status, reason=exc.text or exc.reason,
                                sign_in=False)
        except ServerError as exc:
            log.warning("console.page_failed", path=request.path, error=str(exc))
            return await render(request, "refused.html", status=503, reason=str(exc), sign_in=False)

    return wrapped


async def sign_in_form(request: web.Request) -> web.Response:
    return await render(request, "sign_in.html", error="")


async def sign_in(request: web.Request) -> web.StreamResponse:
    """Keep the token in an HttpOnly cookie and go to the overview, whose check says whether it is
    accepted (a refused token gets the refusal and the form again)."""
    form = await request.post()
    token = str(form.get("token", "")).strip()
    if not token:
        return await render(request, "sign_in.html", status=400, error="enter a token")
    response = web.HTTPSeeOther("/")
    response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict", path="/", secure=request.secure)
    raise response


def static_files() -> dict[str, tuple[bytes, str]]:
    """Every file under static/, read once: {relative path: (bytes, content type)}."""
    files = {}

    def walk(folder, prefix: str) -> None:
        for entry in folder.iterdir():
            if entry.is_dir():
                walk(entry, f"{prefix}{entry.name}/")
            else:
                kind = mimetypes.guess_type(entry.name)[0] or "text/plain"
                files[prefix + entry.name] = (entry.read_bytes(), kind)

    walk(resources.files(__package__) / "static", "")
    return files


def static_handler(files: dict[str, tuple[bytes, str]]):
    async def serve(request: web.Request) -> web.Response:
        found = files.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        body, kind = found
        charset = "utf-8" if kind.startswith("text/") or kind.endswith("javascript") else None
        return web.Response(body=body, content_type=kind, charset=charset,
                            headers={**SECURITY_HEADERS, "Cache-Control": "max-age=3600"})

    return serve
