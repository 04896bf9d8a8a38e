"""The outbox rows of each kind of event, written inside the transaction of what they report.

Every event is one JSON document, the same whatever the target's kind (formats.py renders it at
delivery, so no URL or secret is ever stored). Its idempotency key is derived from what it reports
(alert id, rule, target; job id and outcome; promotion id), so a decision written again after a
retried transaction, or a job failure recorded twice, is one notification (store.outbox.insert skips
a key it holds).

Events, version 1:

- ``alert.matched``: a rule with ``notify TARGET`` matched an alert; with the alert and every
  decision taken for it.
- ``alert.resolved``: UpdateAlertState moved such an alert to RESOLVED; sent to each target that
  was told about it (PagerDuty resolves the incident).
- ``retrain.failed``, ``retrain.not_promoted``, ``model.rolled_back``: the loop's own outcomes,
  sent to the targets named by ``[notify] on_retrain_failed``, ``on_not_promoted``, ``on_rollback``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Iterable, Mapping, Sequence

import asyncpg

from closedloop.dsl import RuleMatch
from closedloop.dsl.schema import LEVEL_NAMES

from ..config import NotifySettings
from ..store import outbox
from ..store.outbox import NewNotification

SCHEMA_VERSION = 1


def _document(event: str, model_id: str | None, summary: str, **parts: Any) -> dict:
    return {"version": SCHEMA_VERSION, "event": event, "time": dt.datetime.now(dt.timezone.utc).isoformat(),
            "model_id": model_id, "summary": summary, **parts}


def _alert_part(alert_id: int, fields: Mapping[str, Any]) -> dict:
    observed = fields.get("observe_time")
    return {"id": alert_id, "type": fields["alert_type"], "severity": LEVEL_NAMES.get(fields["severity"], "medium"),
            "metrics": dict(fields.get("metrics") or {}), "labels": dict(fields.get("labels") or {}),
            "source": fields.get("source") or "",
            "observe_time": observed.isoformat() if isinstance(observed, dt.datetime) else None}


def _decision_text(decisions: Sequence[Mapping[str, Any]]) -> str:
    """'retrain QUEUED (job 12)' for the decisions that did something; 'recorded' when none did."""
    parts = []
    for d in decisions:
        if d["kind"] in ("RETRAIN", "ROLLBACK"):
            job = f" (job {d['job_id']})" if d.get("job_id") else ""
            parts.append(f"{d['kind'].lower()} {d['decision']}{job}")
    return ", ".join(dict.fromkeys(parts)) or "recorded"


def alert_matched(alert_id: int, fields: Mapping[str, Any], matches: Iterable[RuleMatch],
                  actions: Sequence[Mapping[str, Any]]) -> list[NewNotification]:
    """One row per (rule, target) of the `notify TARGET` actions among an alert's rule matches.
    `fields`: the stored alert's columns; `actions`: its closed_loop_actions rows."""
    decisions = [{"rule": a["rule"], "kind": a["kind"], "decision": a["decision"], "reason": a["reason"],
                  "job_id": a["job_id"]} for a in actions]
    alert = _alert_part(alert_id, fields)
    out = []
    for match in matches:
        for spec in match.actions:
            if spec.kind != "notify" or not spec.target:
                continue
            summary = (f"{alert['severity']} {alert['type']} alert {alert_id} on model {fields['model_id']} "
                       f"matched rule {match.rule}: {_decision_text(decisions)}")
            out.append(NewNotification(
                target=spec.target, event="alert.matched",
                idempotency_key=f"closedloop-alert-{alert_id}-{match.rule}-{spec.target}",
                payload=_document("alert.matched", fields["model_id"], summary, rule=match.rule, alert=alert,
                                  decisions=decisions),
                model_id=fields["model_id"], alert_id=alert_id, rule=match.rule))
    return out


async def record_alert_matches(conn: asyncpg.Connection, alerts: Iterable[tuple[int, Mapping, list, list]]) -> None:
    """Write the notifications of a batch of decided alerts: (alert id, fields, matches, actions)."""
    rows = [n for alert_id, fields, matches, actions in alerts
            for n in alert_matched(alert_id, fields, matches, actions)]
    await outbox.insert(conn, rows)


async def record_alert_resolved(conn: asyncpg.Connection, alert: Mapping[str, Any]) -> None:
    """The alert (a stored row) was resolved: tell every target a rule told about it."""
    told = await outbox.rule_notifications_of_alert(conn, alert["id"])
    part = _alert_part(alert["id"], alert)
    await outbox.insert(conn, [NewNotification(
        target=r["target"], event="alert.resolved",
        idempotency_key=f"closedloop-alert-{alert['id']}-{r['rule']}-{r['target']}-resolved",
        payload=_document("alert.resolved", alert["model_id"],
                          f"alert {alert['id']} on model {alert['model_id']} (rule {r['rule']}) was resolved",
                          rule=r["rule"], alert=part, decisions=[]),
        model_id=alert["model_id"], alert_id=alert["id"], rule=r["rule"]) for r in told])


def _job_part(job: Mapping[str, Any]) -> dict:
    return {"id": job["id"], "state": job["state"], "mode": job["mode"], "attempt": job["attempt"],
            "error": job["error"] or "", "metric": job["metric"], "champion_metric": job["champion_metric"],
            "challenger_metric": job["challenger_metric"], "promoted": bool(job["promoted"]),
            "new_version": job["new_version"]}


async def record_job_outcome(conn: asyncpg.Connection, settings: NotifySettings, job: Mapping[str, Any]) -> None:
    """A job reached an end state (the retrain_jobs row): notify a failure or a challenger that
    was not promoted, when the configuration names a target for it."""
    if job["state"] == "FAILED" and settings.on_retrain_failed:
        event, target = "retrain.failed", settings.on_retrain_failed
        summary = f"retrain job {job['id']} of model {job['model_id']} failed after {job['attempt']} attempt(s)"
    elif job["state"] == "SUCCEEDED" and not job["promoted"] and settings.on_not_promoted:
        event, target = "retrain.not_promoted", settings.on_not_promoted
        summary = (f"retrain job {job['id']} of model {job['model_id']}: the challenger was not promoted "
                   f"({job['metric']} {job['challenger_metric']} against the champion's {job['champion_metric']})")
    else:
        return
    await outbox.insert(conn, [NewNotification(
        target=target, event=event, idempotency_key=f"closedloop-job-{job['id']}-{event}-{target}",
        payload=_document(event, job["model_id"], summary, job=_job_part(job)),
        model_id=job["model_id"], job_id=job["id"])])


async def record_rollback(conn: asyncpg.Connection, settings: NotifySettings, change: Mapping[str, Any] | None,
                          *, alert_id: int | None = None, rule: str | None = None) -> None:
    """The loop rolled a model back (`change`: its model_promotions row; None when nothing moved)."""
    if change is None or not settings.on_rollback:
        return
    target, cause = settings.on_rollback, f" by rule {rule} on alert {alert_id}" if rule else ""
    summary = (f"model {change['model_id']} rolled back from version {change['from_version']} to "
               f"{change['to_version']}{cause}")
    await outbox.insert(conn, [NewNotification(
        target=target, event="model.rolled_back", idempotency_key=f"closedloop-rollback-{change['id']}-{target}",
        payload=_document("model.rolled_back", change["model_id"], summary, rule=rule,
                          rollback={"from_version": change["from_version"], "to_version": change["to_version"],
                                    "alert_id": alert_id}),
        model_id=change["model_id"], alert_id=alert_id, rule=rule)])
