"""The overview page `/`: alerts per hour by type, decisions, the job queue now, models and their
latest drift or performance alert, recent promotions and rollbacks. Polls its live JSON for updates."""

from __future__ import annotations

import datetime as dt

from aiohttp import web

from ...store import console as console_store
from .web import DEPS_KEY, caller_scopes, fragments, json_response, render

RANGES = {"24h": dt.timedelta(hours=24), "7d": dt.timedelta(days=7)}
DECISIONS_SAMPLE = 1000   # decisions by outcome: over the newest this many
MODELS_PAGE = 50
PROMOTIONS_SHOWN = 10


def hourly_series(rows, since: dt.datetime, until: dt.datetime) -> dict:
    """uPlot's shape: one x per hour (epoch seconds) and one y list per alert type, zeros filled."""
    start = since.replace(minute=0, second=0, microsecond=0)
    hours = []
    t = start
    while t <= until:
        hours.append(t)
        t += dt.timedelta(hours=1)
    index = {h: i for i, h in enumerate(hours)}
    series: dict[str, list[int]] = {}
    for r in rows:
        values = series.setdefault(r["alert_type"], [0] * len(hours))
        i = index.get(r["hour"])
        if i is not None:
            values[i] = r["n"]
    return {"x": [int(h.timestamp()) for h in hours],
            "series": [{"label": name, "values": values} for name, values in sorted(series.items())]}


def headline_score(metrics: dict | None) -> tuple[str, float] | None:
    """The figure a drift or performance alert is mostly about: drift_score / performance_drop when
    sent, else its largest metric."""
    if not metrics:
        return None
    for key in ("drift_score", "performance_drop", "psi"):
        if key in metrics:
            return key, metrics[key]
    key = max(metrics, key=lambda k: abs(metrics[k]))
    return key, metrics[key]


async def _live_context(request: web.Request, caller) -> dict:
    scopes = caller_scopes(caller)
    now = dt.datetime.now(dt.timezone.utc)
    async with request.app[DEPS_KEY].pool.acquire() as conn:
        jobs = await console_store.job_counts(conn, now - dt.timedelta(hours=24), scopes)
        decisions = await console_store.recent_decisions(conn, DECISIONS_SAMPLE, scopes)
        promotions = await console_store.recent_promotions(conn, model_id=None, limit=PROMOTIONS_SHOWN,
                                                           scopes=scopes)
    return {"jobs": jobs, "decisions": decisions, "decisions_sample": DECISIONS_SAMPLE, "promotions": promotions}


async def overview_page(request: web.Request, caller) -> web.Response:
    range_name = request.query.get("range", "24h")
    if range_name not in RANGES:
        raise web.HTTPBadRequest(text=f"range must be one of {', '.join(RANGES)}")
    after = request.query.get("after") or None
    scopes = caller_scopes(caller)
    now = dt.datetime.now(dt.timezone.utc)
    since = now - RANGES[range_name]
    async with request.app[DEPS_KEY].pool.acquire() as conn:
        per_hour = await console_store.alerts_per_hour(conn, since, scopes)
        models = await console_store.models_with_health(conn, after=after, limit=MODELS_PAGE + 1, scopes=scopes)
    more = len(models) > MODELS_PAGE
    models = [dict(m, headline=headline_score(m["metrics"])) for m in models[:MODELS_PAGE]]
    return await render(request, "overview.html", title="Overview", range_name=range_name, ranges=list(RANGES),
                        chart=hourly_series(per_hour, since, now), models=models,
                        next_after=models[-1]["model_id"] if more else None,
                        live_url="/console/live/overview.json", **await _live_context(request, caller))


async def overview_live(request: web.Request, caller) -> web.Response:
    """The parts of the overview that change while one looks, as HTML fragments the script swaps in."""
    context = await _live_context(request, caller)
    return json_response({"sections": await fragments(request, context, "jobs_now", "decisions", "promotions")})
