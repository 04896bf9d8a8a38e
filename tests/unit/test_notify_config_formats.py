"""The [notify] configuration and the message formats: pure logic."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from closedloop.server.config import PAGERDUTY_EVENTS_URL, NotifyTarget, Settings, load_config_file, notify_settings
from closedloop.server.errors import ConfigError
from closedloop.server.notify.formats import pagerduty_event, render, slack_message
from closedloop.server.notify.worker import _redact, backoff_s

CONFIG = """
[notify]
on_retrain_failed = "slack_quants"
on_rollback = "pagerduty_fx"

[notify.targets.pagerduty_fx]
kind = "pagerduty"
secret_env = "PD_KEY"

[notify.targets.slack_quants]
kind = "slack"
url_env = "SLACK_URL"
max_attempts = 5

[notify.targets.risk_hook]
kind = "webhook"
url = "https://risk.example/hooks/closedloop"
secret = "hook-secret"
backoff_initial = 0.5
"""
ENV = {"PD_KEY": "pd-routing-secret", "SLACK_URL": "https://hooks.slack.com/services/T/B/slacktok9z"}


def test_config_file_is_read_into_settings(tmp_path, monkeypatch):
    path = tmp_path / "closedloop.toml"
    path.write_text(CONFIG)
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    settings = Settings(data_dir=tmp_path, config=path)
    n = settings.notify
    assert n.target_names == {"pagerduty_fx", "slack_quants", "risk_hook"}
    assert (n.on_retrain_failed, n.on_rollback, n.on_not_promoted) == ("slack_quants", "pagerduty_fx", None)
    pd = n.targets["pagerduty_fx"]
    assert (pd.url, pd.secret, pd.max_attempts) == (PAGERDUTY_EVENTS_URL, "pd-routing-secret", 8)
    assert n.targets["slack_quants"].max_attempts == 5 and n.targets["risk_hook"].backoff_initial == 0.5
    # No secret in what a log line or error would print.
    assert not any(s in repr(settings) for s in ("pd-routing-secret", "slacktok9z", "hook-secret"))


@pytest.mark.parametrize("document, message", [
    ({"notify": {"targets": {"x": {"kind": "email"}}}}, "notify.targets.x.kind must be one of webhook, slack, pagerduty"),
    ({"notify": {"targets": {"x": {"kind": "webhook", "url": "https://h/x"}}}},
     "notify.targets.x: a webhook target needs secret or secret_env (the shared HMAC key)"),
    ({"notify": {"targets": {"x": {"kind": "slack"}}}}, "notify.targets.x: a slack target needs url (or url_env)"),
    ({"notify": {"targets": {"x": {"kind": "slack", "url": "ftp://h"}}}}, "notify.targets.x.url must start with http"),
    ({"notify": {"targets": {"x": {"kind": "pagerduty", "secret_env": "NOPE"}}}},
     "notify.targets.x.secret_env: the variable NOPE is not set"),
    ({"notify": {"targets": {"x": {"kind": "pagerduty", "secret": "k", "max_atempts": 3}}}},
     "notify.targets.x.max_atempts: unknown key; did you mean 'max_attempts'?"),
    ({"notify": {"targets": {"x": {"kind": "pagerduty", "secret": "k", "max_attempts": 0}}}},
     "notify.targets.x.max_attempts must be an integer >= 1"),
    ({"notify": {"on_rollback": "nobody"}}, "notify.on_rollback: 'nobody' is not a configured target"),
    ({"notify": {"targets": {"bad-name": {"kind": "pagerduty", "secret": "k"}}}}, "a target name is a rule-language name"),
])
def test_bad_configuration_is_one_clear_error(document, message):
    with pytest.raises(ConfigError) as exc:
        notify_settings(document, {})
    assert message in str(exc.value)


def test_config_file_errors_name_the_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[notify\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config_file(path)
    path.write_text("[notfy]\n")
    with pytest.raises(ConfigError, match=r"unknown section\(s\) notfy"):
        load_config_file(path)
    with pytest.raises(ConfigError, match="c2.toml"):
        load_config_file(tmp_path / "c2.toml")


EVENT = {"version": 1, "event": "alert.matched", "time": "2026-01-01T00:00:00+00:00", "model_id": "fx-eur",
         "summary": "high drift alert 5 on model fx-eur matched rule page_fx: retrain QUEUED (job 2)",
         "rule": "page_fx", "alert": {"id": 5, "type": "drift", "severity": "high", "metrics": {"drift_score": 0.4},
                                      "labels": {}, "source": "<http://evil|click>", "observe_time": None},
         "decisions": [{"rule": "page_fx", "kind": "RETRAIN", "decision": "QUEUED", "reason": "", "job_id": 2}]}
ROW = {"id": 9, "idempotency_key": "closedloop-alert-5-page_fx-t", "event": "alert.matched", "payload": EVENT}


def test_webhook_body_is_signed_with_the_shared_secret():
    request = render(NotifyTarget("t", "webhook", "https://h/x", "k3y"), ROW)
    expected = "sha256=" + hmac.new(b"k3y", request.body, hashlib.sha256).hexdigest()
    assert request.headers["X-Closedloop-Signature"] == expected
    assert request.headers["Idempotency-Key"] == ROW["idempotency_key"]
    body = json.loads(request.body)
    assert body["idempotency_key"] == ROW["idempotency_key"] and body["version"] == 1 and body["notification_id"] == 9


def test_slack_message_has_the_alert_rule_and_decision_and_no_link():
    message = slack_message(EVENT, ROW["idempotency_key"])
    text = json.dumps(message)
    assert "*Rule* page_fx" in text and "retrain queued (job 2)" in text and "*Alert* 5" in text
    assert "<http" not in text and message["text"].startswith("high drift alert 5")


def test_pagerduty_trigger_and_resolve_share_the_dedup_key():
    trigger = pagerduty_event(EVENT, "k", "routing")
    resolve = pagerduty_event({**EVENT, "event": "alert.resolved"}, "k2", "routing")
    assert trigger["event_action"] == "trigger" and resolve["event_action"] == "resolve"
    assert trigger["dedup_key"] == resolve["dedup_key"] == "closedloop/fx-eur/page_fx"
    assert trigger["payload"]["severity"] == "error" and trigger["payload"]["custom_details"]["idempotency_key"] == "k"
    failed = pagerduty_event({"event": "retrain.failed", "model_id": "m", "summary": "s", "job": {}}, "k", "r")
    assert failed["dedup_key"] == "closedloop/m/retrain.failed" and failed["payload"]["severity"] == "error"


def test_errors_are_redacted_and_backoff_doubles_to_its_cap():
    target = NotifyTarget("s", "slack", "https://hooks.slack.com/services/T/B/tok3n", "", backoff_initial=1.0,
                          backoff_max=5.0)
    text = _redact("ClientConnectorError: cannot reach https://hooks.slack.com/services/T/B/tok3n", target)
    assert "tok3n" not in text
    delays = [backoff_s(target, n) for n in (1, 2, 3, 4)]
    assert 0.9 <= delays[0] <= 1.1 and 1.8 <= delays[1] <= 2.2 and 3.6 <= delays[2] <= 4.4 and delays[3] <= 5.5
