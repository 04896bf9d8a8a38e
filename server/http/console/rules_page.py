"""The rules page `/rules`: the active rule set highlighted, its version history with a diff between
versions, and the feedback report per rule (triggers, FP/FN rates, verdicts, threshold suggestions)
with a sparkline of each rule's triggers per day."""

from __future__ import annotations

import datetime as dt

from aiohttp import web

from ...feedback.report import build_report
from ...store import console as console_store
from ...store import rules as rule_store
from .rule_text import diff_lines, highlight
from .svg import sparkline
from .web import DEPS_KEY, caller_scopes, render

VERSIONS_PAGE = 20
TRIGGER_DAYS = 14
DEFAULT_REPORT_DAYS = 7
MAX_REPORT_DAYS = 30
# The feedback report replays every alert of its window (the quiet ones give the FN rates), so the
# console's window stops at this many alerts; `closedloop feedback report` has no such cap.
REPORT_MAX_ALERTS = 2000


def _int_param(request: web.Request, name: str, default: int | None, low: int, high: int) -> int | None:
    text = request.query.get(name)
    if not text:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise web.HTTPBadRequest(text=f"{name} must be a whole number from {low} to {high}")
    return int(text)


def daily_counts(rows, rule: str, since: dt.datetime, days: int) -> list[int]:
    first = since.replace(hour=0, minute=0, second=0, microsecond=0)
    counts = [0] * (days + 1)
    for r in rows:
        if r["rule"] == rule:
            i = (r["day"] - first).days
            if 0 <= i < len(counts):
                counts[i] = r["n"]
    return counts


async def _diff(conn, version: int):
    new = await rule_store.get_version(conn, version)
    if new is None:
        raise web.HTTPNotFound(text=f"no rule set version {version}")
    previous = await console_store.previous_rule_set_version(conn, version)
    old = await rule_store.get_version(conn, previous) if previous else None
    return {"version": version, "previous": previous,
            "lines": diff_lines(old["source"] if old else "", new["source"],
                                f"version {previous}" if previous else "(none)", f"version {version}")}


async def rules_page(request: web.Request, caller) -> web.Response:
    deps = request.app[DEPS_KEY]
    scopes = caller_scopes(caller)
    days = _int_param(request, "days", DEFAULT_REPORT_DAYS, 1, MAX_REPORT_DAYS)
    before = _int_param(request, "before", None, 1, 2**62)
    diff_version = _int_param(request, "diff", None, 1, 2**62)
    active = deps.rules.active
    now = dt.datetime.now(dt.timezone.utc)
    since = now - dt.timedelta(days=TRIGGER_DAYS)
    report_start = now - dt.timedelta(days=days)
    async with deps.pool.acquire() as conn:
        cap = await console_store.time_of_nth_newest_alert(conn, REPORT_MAX_ALERTS, scopes)
        capped = cap is not None and cap > report_start
        report_start = cap if capped else report_start
        stored = await rule_store.get_version(conn, active.version) if active else None
        history = await console_store.rule_set_versions(conn, before=before, limit=VERSIONS_PAGE + 1)
        diff = await _diff(conn, diff_version) if diff_version else None
        names = [r.name for r in active.ruleset.rules] if active else []
    report = await build_report(deps.pool, model_id=None, rule=None, start=report_start, end=now,
                                fn_window=None, active_ruleset=active.ruleset if active else None, scopes=scopes)
    names += [r for r in report.rules if r not in names]
    async with deps.pool.acquire() as conn:
        triggers = await console_store.rule_triggers_per_day(conn, names, since, scopes)
    sparks = {n: sparkline(daily_counts(triggers, n, since, TRIGGER_DAYS),
                           f"triggers of {n} per day over {TRIGGER_DAYS} days") for n in names}
    more = len(history) > VERSIONS_PAGE
    history = history[:VERSIONS_PAGE]
    return await render(request, "rules.html", title="Rules", active=stored,
                        source=highlight(stored["source"]) if stored else None, history=history,
                        next_before=history[-1]["version"] if more else None, diff=diff, report=report,
                        names=names, sparks=sparks, days=days, trigger_days=TRIGGER_DAYS,
                        capped_at=REPORT_MAX_ALERTS if capped else None)
