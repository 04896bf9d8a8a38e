"""One outbox event as the request its target's kind expects.

Every request carries the notification's idempotency key in the ``Idempotency-Key`` header and in
the body, so a receiver can drop the repeats that at-least-once delivery sends.

- ``webhook``: the event document (events.py, ``"version": 1``) plus ``idempotency_key`` and
  ``notification_id``, as compact JSON; ``X-Closedloop-Signature: sha256=<hex>`` is the
  HMAC-SHA256 of those exact body bytes with the target's shared secret. A receiver verifies with
  ``hmac.compare_digest(header, "sha256=" + hmac.new(secret, body, sha256).hexdigest())``.
- ``slack``: an incoming-webhook message: ``text`` (the one-line summary, also the notification
  fallback) and blocks with the alert, the rule, the decision and the key; no links.
- ``pagerduty``: an Events API v2 event. ``trigger`` for everything but ``alert.resolved``, which
  sends ``resolve``; ``dedup_key`` is per model and rule (per model and event for the loop's own
  outcomes), so repeated matches update one incident and the resolve closes it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any, Mapping

from ..config import NotifyTarget

SIGNATURE_HEADER = "X-Closedloop-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
# closedloop severities -> PagerDuty's (critical, error, warning, info)
PAGERDUTY_SEVERITY = {"critical": "critical", "high": "error", "medium": "warning", "low": "info"}
OUTCOME_SEVERITY = {"retrain.failed": "error", "retrain.not_promoted": "warning", "model.rolled_back": "warning"}


@dataclass(frozen=True)
class Request:
    body: bytes
    headers: dict[str, str]


def _json(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True, default=str).encode()


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def render(target: NotifyTarget, notification: Mapping[str, Any]) -> Request:
    """The request for one outbox row (`notification`: id, idempotency_key, event, payload)."""
    key = notification["idempotency_key"]
    payload = dict(notification["payload"])
    headers = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: key,
               "User-Agent": "closedloop-notify/1"}
    if target.kind == "webhook":
        body = _json({**payload, "idempotency_key": key, "notification_id": notification["id"]})
        headers[SIGNATURE_HEADER] = signature(target.secret, body)
        headers["X-Closedloop-Event"] = payload["event"]
        return Request(body, headers)
    if target.kind == "slack":
        return Request(_json(slack_message(payload, key)), headers)
    return Request(_json(pagerduty_event(payload, key, target.secret)), headers)


def slack_message(payload: Mapping[str, Any], key: str) -> dict:
    fields = []
    alert = payload.get("alert")
    if alert:
        fields.append(f"*Alert* {alert['id']}: {alert['severity']} {alert['type']} on `{payload['model_id']}`")
    if payload.get("rule"):
        fields.append(f"*Rule* {payload['rule']}")
    decisions = payload.get("decisions") or []
    if decisions:
        fields.append("*Decision* " + "; ".join(
            f"{d['kind'].lower()} {d['decision'].lower()}" + (f" (job {d['job_id']})" if d.get("job_id") else "")
            for d in decisions))
    job = payload.get("job")
    if job:
        fields.append(f"*Job* {job['id']}: {job['state'].lower()}" + (f", {job['error']}" if job["error"] else ""))
    blocks: list[dict] = [{"type": "section", "text": {"type": "mrkdwn", "text": _slack_escape(payload["summary"])}}]
    if fields:
        blocks.append({"type": "section", "fields": [{"type": "mrkdwn", "text": _slack_escape(f)} for f in fields]})
    blocks.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": f"closedloop {payload['event']} · {key}"}]})
    return {"text": _slack_escape(payload["summary"]), "blocks": blocks, "unfurl_links": False}


def _slack_escape(text: str) -> str:
    # Slack treats <...> as links and mentions; a summary must never become one.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def pagerduty_event(payload: Mapping[str, Any], key: str, routing_key: str) -> dict:
    event = payload["event"]
    model_id = payload.get("model_id") or "-"
    scope = payload.get("rule") if event.startswith("alert.") else event
    dedup_key = f"closedloop/{model_id}/{scope}"
    if event == "alert.resolved":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup_key}
    alert = payload.get("alert")
    severity = PAGERDUTY_SEVERITY.get(alert["severity"], "warning") if alert else OUTCOME_SEVERITY.get(event, "warning")
    details = {k: v for k, v in payload.items() if k not in ("summary", "version")}
    details["idempotency_key"] = key
    return {
        "routing_key": routing_key, "event_action": "trigger", "dedup_key": dedup_key,
        "payload": {"summary": payload["summary"][:1024], "source": f"closedloop/{model_id}", "severity": severity,
                    "component": model_id, "group": "closedloop", "class": event, "custom_details": details},
    }
