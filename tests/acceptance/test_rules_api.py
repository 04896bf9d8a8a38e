"""RuleService through the real client: validate, apply (versioned, atomic, persistent), evaluate, backtest."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal

import grpc
import pytest

from closedloop import AsyncClient
from closedloop.server.app import create_server
from closedloop.v1 import alert_pb2, rules_pb2

from .conftest import make_settings
from .helpers import start_server_process, stop_process, synthetic_model
from .test_alerts import violations

RISKY = """
rule risky:
    when type == "risk" and metrics.risk_score > 50
    then retrain full priority critical cooldown 1h
"""
BROKEN = """
rule a:
    when metrics.drift_score > 5m
    then retrain sideways
"""


async def test_validate_reports_diagnostics_not_errors(client):
    resp = await client.validate_rules(BROKEN, "broken.rules")
    assert not resp.valid and resp.rules == []
    errors = [d for d in resp.diagnostics if d.level == rules_pb2.Diagnostic.LEVEL_ERROR]
    assert len(errors) >= 1
    assert all(d.filename == "broken.rules" and d.line >= 2 and d.column >= 1 for d in errors)
    assert any("broken.rules:3:" in d.rendered and "^" in d.rendered for d in errors)


async def test_apply_is_versioned_and_get_returns_it(client):
    before = await client.get_rule_set()
    applied = await client.apply_rules(RISKY, "risky.rules")
    assert applied.version == before.version + 1
    assert [r.name for r in applied.rules] == ["risky"] and applied.rules[0].alert_types == ["risk"]
    assert (await client.get_rule_set()).version == applied.version
    assert (await client.get_rule_set(before.version)).sha256 == before.sha256
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.get_rule_set(9999)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_apply_broken_rules_is_invalid_argument_and_keeps_the_active_set(client):
    before = await client.get_rule_set()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.apply_rules(BROKEN, "broken.rules")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "broken.rules:3:" in err.value.details()
    assert violations(err.value)["source"].startswith("broken.rules:")
    assert (await client.get_rule_set()).version == before.version


async def test_dry_run_changes_nothing(client):
    before = await client.get_rule_set()
    dry = await client.apply_rules(RISKY, dry_run=True)
    assert dry.version == 0 and [r.name for r in dry.rules] == ["risky"]
    assert (await client.get_rule_set()).version == before.version


async def test_applied_rules_take_effect_at_once(client):
    await client.register_model(synthetic_model("rk"))
    quiet = await client.create_alert("rk", "risk", "high", metrics={"risk_score": 60})
    assert list(quiet.actions) == []  # default rule needs > 80
    await client.apply_rules(RISKY)
    acted = await client.create_alert("rk", "risk", "high", metrics={"risk_score": 60})
    assert [a.rule for a in acted.actions] == ["risky"]
    assert acted.rule_set_version == (await client.get_rule_set()).version


async def test_evaluate_explains_without_side_effects(client, server):
    alert = alert_pb2.Alert(model_id="m", type="drift", severity=3, metrics={"drift_score": 0.3})
    resp = await client.evaluate_rules(alert)
    by_rule = {e.rule: e for e in resp.evaluations}
    drift = by_rule["drift_auto_retrain"]
    assert drift.matched and [c.value for c in drift.clauses] == [rules_pb2.CLAUSE_VALUE_TRUE] * 2
    assert not by_rule["risk_auto_retrain"].matched
    assert resp.merged_actions[0].priority == 3
    missing = await client.evaluate_rules(alert_pb2.Alert(model_id="m", type="drift", severity=3))
    drift = {e.rule: e for e in missing.evaluations}["drift_auto_retrain"]
    assert not drift.matched and rules_pb2.CLAUSE_VALUE_MISSING in [c.value for c in drift.clauses]
    custom = await client.evaluate_rules(alert_pb2.Alert(model_id="m", type="risk", severity=3,
                                                         metrics={"risk_score": 55}), source=RISKY)
    assert custom.rule_set_version == 0 and custom.evaluations[0].matched
    async with server.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM monitoring_alert_triggers") == 0


async def test_evaluate_bad_input(client):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.evaluate_rules(alert_pb2.Alert(model_id="", type="drift", severity=1))
    assert "alert.model_id" in violations(err.value)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.evaluate_rules(alert_pb2.Alert(model_id="m", type="drift", severity=1), source=BROKEN)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_backtest_compares_candidate_with_what_happened(client):
    await client.register_model(synthetic_model("bt"))
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    for score in (40, 60, 90):
        await client.create_alert("bt", "risk", "high", metrics={"risk_score": score})
    report = await client.backtest_rules(RISKY, start, dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=1))
    assert report.alerts == 3
    assert {r.rule: r.matches for r in report.active.rules} == {"risk_auto_retrain": 1}
    assert {r.rule: (r.matches, r.retrains) for r in report.candidate.rules} == {"risky": (2, 1)}
    assert report.active.jobs == 1 and report.candidate.jobs == 1
    # 40: nothing either way. 60: nothing happened, the candidate would have queued the job, so
    # 90 (which did queue one) would have met the candidate's cooldown.
    assert report.differences_total == 2
    assert any(d.active_outcome == "nothing" and d.candidate_outcome.startswith("QUEUED full/critical")
               for d in report.differences)


async def test_backtest_bad_window(client):
    now = dt.datetime.now(dt.timezone.utc)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.backtest_rules(RISKY, now, now - dt.timedelta(hours=1))
    assert "end_time" in violations(err.value)


async def test_active_set_survives_restart(database_url, tmp_path):
    settings = make_settings(database_url, tmp_path)
    srv, port = await create_server(settings)
    async with AsyncClient(f"127.0.0.1:{port}") as c:
        applied = await c.apply_rules(RISKY, "risky.rules")
        alert = await c.create_alert("keep", "drift", "low")
    await srv.stop(1)
    srv, port = await create_server(settings)
    try:
        async with AsyncClient(f"127.0.0.1:{port}") as c:
            active = await c.get_rule_set()
            assert active.version == applied.version and [r.name for r in active.rules] == ["risky"]
            assert (await c.get_alert(alert.id)).model_id == "keep"  # alerts persist too
    finally:
        await srv.stop(1)


def replace_file(path, text: str) -> None:
    """Write-then-rename, as a deploy should, so a reload never reads half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


async def test_rules_file_at_start_and_sighup_reload(database_url, tmp_path):
    rules = tmp_path / "live.rules"
    rules.write_text(RISKY)
    proc, target = start_server_process(database_url, tmp_path / "data", "--no-run-workers", "--rules", str(rules))
    try:
        async with AsyncClient(target) as c:
            first = await c.get_rule_set()
            assert [r.name for r in first.rules] == ["risky"]
            replace_file(rules, BROKEN)  # a failing file keeps the old set
            os.kill(proc.pid, signal.SIGHUP)
            await asyncio.sleep(0.5)
            assert (await c.get_rule_set()).version == first.version
            replace_file(rules, RISKY.replace("risky", "riskier"))
            os.kill(proc.pid, signal.SIGHUP)
            for _ in range(100):
                current = await c.get_rule_set()
                if current.version != first.version:
                    break
                await asyncio.sleep(0.05)
            assert [r.name for r in current.rules] == ["riskier"]
    finally:
        assert stop_process(proc) == 0
