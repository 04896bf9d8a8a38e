"""The alert page `/alerts/{id}`: one alert's metrics and labels, each rule's clause-by-clause
evaluation (as EvaluateRules explains a stored alert: the active rule set, the model's facts as of
the alert's arrival), the decisions taken and the jobs they led to."""

from __future__ import annotations

from aiohttp import web

from closedloop.dsl.facts import alert_facts
from closedloop.dsl.schema import LEVEL_NAMES

from ...store import alerts as alert_store
from ...store import console as console_store
from .web import DEPS_KEY, may_see, render

CLAUSE_WORDS = {True: "true", False: "false", None: "unknown"}


async def alert_page(request: web.Request, caller) -> web.Response:
    deps = request.app[DEPS_KEY]
    text = request.match_info["alert_id"]
    alert = None
    async with deps.pool.acquire() as conn:
        if text.isdigit() and int(text) < 2**63:
            alert = await alert_store.get_alert(conn, int(text))
        # Outside the caller's scopes reads as absent: the page says nothing about other desks' alerts.
        if alert is None or not may_see(caller, alert["model_id"]):
            raise web.HTTPNotFound(text=f"no alert {text!r}")
        actions = (await alert_store.actions_for(conn, [alert["id"]])).get(alert["id"], [])
        jobs = await console_store.jobs_by_ids(conn, [a["job_id"] for a in actions if a["job_id"] is not None])
    active = deps.rules.active
    explanations = []
    if active is not None:
        facts = alert_facts(type=alert["alert_type"], model_id=alert["model_id"], severity=alert["severity"],
                            metrics=alert["metrics"], labels=alert["labels"], source=alert["source"],
                            observe_time=alert["observe_time"], received=alert["create_time"])
        model = (await deps.facts.get_many([alert["model_id"]], alert["create_time"]))[alert["model_id"]]
        explanations = [{"rule": ex.rule, "matched": ex.matched,
                         "clauses": [(clause, CLAUSE_WORDS[value]) for clause, value in ex.clauses],
                         "actions": [a.describe() for a in ex.actions]}
                        for ex in active.ruleset.explain(facts, model)]
    return await render(request, "alert.html", title=f"Alert {alert['id']}", alert=alert,
                        severity=LEVEL_NAMES.get(alert["severity"], str(alert["severity"])), actions=actions,
                        jobs=jobs, explanations=explanations, rule_set_version=active.version if active else None)
