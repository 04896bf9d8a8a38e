"""The model page `/models/{model_id}`: versions (champion/challenger per retrain), the serving
version's training profile, drift per feature, alerts with their decisions, jobs with live progress,
and the rollback command to use."""

from __future__ import annotations

import datetime as dt
import json
from urllib.parse import quote

from aiohttp import web

from ...store import alerts as alert_store
from ...store import console as console_store
from ...store import models as model_store
from ...store import queue
from ...store import versions as version_store
from .svg import heatmap
from .web import DEPS_KEY, fragments, json_response, may_see, render

ALERTS_PAGE = 25
JOBS_SHOWN = 10
DRIFT_WINDOWS = 30     # heatmap columns: the newest drift alerts
PROMOTIONS_SHOWN = 10


def parse_cursor(text: str | None) -> tuple[dt.datetime, int] | None:
    """`after` for alerts.list_alerts from the page's `before` link ("ISO time|id")."""
    if not text:
        return None
    try:
        time_text, _, id_text = text.partition("|")
        return dt.datetime.fromisoformat(time_text), int(id_text)
    except ValueError:
        raise web.HTTPBadRequest(text="that page link is not valid: start from the first page") from None


def version_chart(versions) -> dict:
    """x: version numbers (oldest first); champion and challenger metric; promoted ones marked."""
    ordered = sorted(versions, key=lambda v: v["version"])
    return {"x": [v["version"] for v in ordered],
            "series": [{"label": "champion", "values": [v["champion_metric_value"] for v in ordered]},
                       {"label": "challenger", "values": [v["metric_value"] for v in ordered]},
                       {"label": "promoted", "values": [v["metric_value"] if v["promoted"] else None
                                                        for v in ordered], "points_only": True}],
            "x_label": "version"}


def drift_heatmap(drift_alerts, model_id: str):
    """Features x windows from the drift scores the drift alerts carried (oldest window left)."""
    ordered = list(reversed(drift_alerts))
    columns = [f"#{a['id']}" for a in ordered]
    features = sorted({k for a in ordered for k in (a["metrics"] or {})})
    values = {(k, f"#{a['id']}"): v for a in ordered for k, v in (a["metrics"] or {}).items()}
    return heatmap(features, columns, values, f"drift per feature for {model_id}, oldest alert left") if features else None


def rollback_version(model, versions) -> int | None:
    """The version a rollback would most likely return to: the newest promoted version other than
    the serving one (None when there is none)."""
    others = [v["version"] for v in versions if v["promoted"] and v["version"] != model["current_version"]]
    return max(others) if others else None


async def _jobs_context(conn, model_id: str) -> dict:
    return {"jobs": await queue.list_jobs(conn, model_id=model_id, state=None, before_id=None, limit=JOBS_SHOWN),
            "promotions": await console_store.recent_promotions(conn, model_id=model_id, limit=PROMOTIONS_SHOWN)}


def _visible_model_id(caller, model_id: str) -> str:
    # A model outside the caller's scopes is "not found": the answer does not say whether it exists.
    if not model_id or not may_see(caller, model_id):
        raise web.HTTPNotFound(text=f"no model {model_id!r}")
    return model_id


async def model_page(request: web.Request, caller) -> web.Response:
    model_id = _visible_model_id(caller, request.match_info["model_id"])
    cursor = parse_cursor(request.query.get("before"))
    async with request.app[DEPS_KEY].pool.acquire() as conn:
        model = await model_store.get_model(conn, model_id)
        if model is None:
            raise web.HTTPNotFound(text=f"no model {model_id!r}")
        versions = await version_store.list_versions(conn, model_id)
        current = await version_store.current_version_row(conn, model_id)
        drift = await console_store.alerts_of_type(conn, model_id, "drift", DRIFT_WINDOWS)
        alerts = await alert_store.list_alerts(conn, model_id=model_id, alert_type=None, state=None, start=None,
                                               end=None, after=cursor, limit=ALERTS_PAGE + 1)
        actions = await alert_store.actions_for(conn, [a["id"] for a in alerts[:ALERTS_PAGE]])
        live = await _jobs_context(conn, model_id)
    more = len(alerts) > ALERTS_PAGE
    alerts = alerts[:ALERTS_PAGE]
    last = alerts[-1] if more else None
    return await render(
        request, "model.html", title=f"Model {model_id}", model=model, versions=versions, current=current,
        training=json.dumps(model["training"], indent=2, sort_keys=True), chart=version_chart(versions),
        heatmap=drift_heatmap(drift, model_id), alerts=alerts, actions=actions,
        next_before=f"{last['observe_time'].isoformat()}|{last['id']}" if last else None,
        rollback_to=rollback_version(model, versions), live_url=f"/console/live/model.json?model={quote(model_id, safe='')}", **live)


async def model_live(request: web.Request, caller) -> web.Response:
    model_id = _visible_model_id(caller, request.query.get("model", ""))
    async with request.app[DEPS_KEY].pool.acquire() as conn:
        context = await _jobs_context(conn, model_id)
    return json_response({"sections": await fragments(request, context, "model_jobs", "model_promotions")})
