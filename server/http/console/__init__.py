"""The web console: a read-only picture of the loop in a browser (issue 16).

One seam for the HTTP side:

    add_console_routes(app, ConsoleDeps(pool, rules, facts, authorize))

adds the pages `/`, `/models/{model_id}`, `/rules`, `/alerts/{id}`, their live JSON, a sign-in form
and the static files under `/console/static/`. `authorize(request)` is the HTTP side's check: it
returns the caller (an object with `scopes`: model globs, or None for every model; None for an
anonymous caller when auth is off) or raises web.HTTPUnauthorized / web.HTTPForbidden. A browser
cannot attach a bearer token by itself, so the sign-in form keeps the token in an HttpOnly cookie and
the console hands it to `authorize` as the usual `Authorization: Bearer` header.

Pages are rendered on the server (Jinja2, autoescaped); the only script is console/static/console.js
(charts with the vendored uPlot, and the live refresh), under a Content-Security-Policy that forbids
inline script and eval. The HTTP side (http/server.py) mounts it on --http-listen, with the
caller check of console/auth.py.
"""

from __future__ import annotations

from aiohttp import web

from . import alert_page, model_page, overview, rules_page
from .web import (DEPS_KEY, ENV_KEY, STATIC_PREFIX, ConsoleDeps, environment, page, sign_in, sign_in_form,
                  static_files, static_handler)

__all__ = ["ConsoleDeps", "add_console_routes"]


def add_console_routes(app: web.Application, deps: ConsoleDeps) -> None:
    """Add the console's pages, live JSON, sign-in and static files to the HTTP side's app."""
    app[DEPS_KEY] = deps
    app[ENV_KEY] = environment()
    app.router.add_get("/", page(overview.overview_page))
    app.router.add_get("/console/live/overview.json", page(overview.overview_live))
    app.router.add_get("/models/{model_id:.+}", page(model_page.model_page))
    app.router.add_get("/console/live/model.json", page(model_page.model_live))
    app.router.add_get("/rules", page(rules_page.rules_page))
    app.router.add_get("/alerts/{alert_id}", page(alert_page.alert_page))
    app.router.add_get("/login", sign_in_form)
    app.router.add_post("/login", sign_in)
    app.router.add_get(STATIC_PREFIX + "{name:.+}", static_handler(static_files()))
