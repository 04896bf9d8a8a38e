"""The decision rules as pure logic: merging, cooldowns, coalescing, budgets, unregistered models."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from closedloop.dsl import ActionSpec, RuleMatch
from closedloop.server.loop import decide as decide_module
from closedloop.server.loop.decide import AlertDecision, Decider, ModelState, PlannedAction, RetrainRequest

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.timezone.utc)
HOUR = 3600.0


def retrain(rule: str, mode: str = "full", priority: int = 3, cooldown: float | None = HOUR,
            per_model: bool = False) -> RuleMatch:
    return RuleMatch(rule, (ActionSpec(kind="retrain", mode=mode, priority=priority, cooldown_seconds=cooldown,
                                       cooldown_per_model=per_model),))


def record(rule: str) -> RuleMatch:
    return RuleMatch(rule, (ActionSpec(kind="record", mode=None, priority=None, cooldown_seconds=None,
                                       cooldown_per_model=False),))


def decider(**state) -> Decider:
    return Decider(NOW, {"m": ModelState(registered=True, enabled=True, **state)})


def test_merge_full_beats_incremental_and_highest_priority_wins():
    d = decider().decide("m", [retrain("a", "incremental", 1), retrain("b", "full", 2), record("c")])
    assert (d.retrain.mode, d.retrain.priority, d.retrain.rules) == ("FULL", 2, ("a", "b"))
    assert [(a.rule, a.decision) for a in d.actions] == [("c", "RECORDED"), ("a", "QUEUED"), ("b", "QUEUED")]
    assert d.alert_state == "ACTIONED"


def test_second_alert_in_a_batch_meets_the_cooldown_it_just_started():
    dec = decider()
    first = dec.decide("m", [retrain("a")])
    dec.job_started("m", 7)
    second = dec.decide("m", [retrain("a")])
    assert first.actions[0].decision == "QUEUED"
    assert second.actions[0].decision == "SKIPPED_COOLDOWN"
    assert second.actions[0].cooldown_until == NOW + dt.timedelta(hours=1)
    assert second.alert_state == "SUPPRESSED"


def test_other_rule_coalesces_into_the_active_job():
    dec = decider(active_job=42)
    d = dec.decide("m", [retrain("b", priority=4)])
    assert d.actions[0].decision == "COALESCED" and d.retrain.coalesce_into == 42


def test_cooldown_expired_and_per_model_cooldown():
    old = NOW - dt.timedelta(hours=2)
    assert decider(last_queued_by_rule={"a": old}).decide("m", [retrain("a")]).actions[0].decision == "QUEUED"
    recent = NOW - dt.timedelta(minutes=10)
    # Another rule retrained the model 10 minutes ago: only a per-model cooldown counts that.
    assert decider(last_automated=recent).decide("m", [retrain("a")]).actions[0].decision == "QUEUED"
    held = decider(last_automated=recent).decide("m", [retrain("a", per_model=True)])
    assert held.actions[0].decision == "SKIPPED_COOLDOWN"


def test_model_cooldown_override_replaces_the_rules():
    recent = NOW - dt.timedelta(minutes=10)
    assert decider(cooldown_override_s=0.0, last_queued_by_rule={"a": recent}).decide(
        "m", [retrain("a")]).actions[0].decision == "QUEUED"
    assert decider(cooldown_override_s=86400.0, last_queued_by_rule={"a": NOW - dt.timedelta(hours=5)}).decide(
        "m", [retrain("a")]).actions[0].decision == "SKIPPED_COOLDOWN"


def test_daily_budget():
    d = decider(max_retrains_per_day=2, automated_today=2).decide("m", [retrain("a")])
    assert d.actions[0].decision == "SKIPPED_BUDGET" and d.retrain is None


def test_unregistered_and_disabled_models_are_recorded():
    dec = Decider(NOW, {"off": ModelState(registered=True, enabled=False)})
    ghost = dec.decide("ghost", [retrain("a")])
    off = dec.decide("off", [retrain("a")])
    assert ghost.actions[0].decision == "RECORDED" and "not registered" in ghost.actions[0].reason
    assert off.actions[0].decision == "RECORDED" and "disabled" in off.actions[0].reason
    assert ghost.retrain is None and ghost.alert_state == "OPEN"


def test_rollback_needs_an_earlier_version():
    rollback = RuleMatch("watch", (ActionSpec(kind="rollback", mode=None, priority=None, cooldown_seconds=None,
                                              cooldown_per_model=False),))
    assert decider(current_version=1).decide("m", [rollback]).actions[0].decision == "RECORDED"
    d = decider(current_version=3).decide("m", [rollback])
    assert d.actions[0].decision == "ROLLED_BACK" and d.rollback is not None and d.alert_state == "ACTIONED"


def test_decisions_built_from_slots_equal_the_constructors_and_stay_frozen():
    """decide() writes the slots of its frozen result classes directly (decide.py's builders): every
    field set, equal (and hashing equal) to the classes' own constructors, and still immutable."""
    until = NOW + dt.timedelta(hours=1)
    action = decide_module._planned("a", "RETRAIN", "FULL", 3, "SKIPPED_COOLDOWN", "why", until)
    assert action == PlannedAction("a", "RETRAIN", "FULL", 3, "SKIPPED_COOLDOWN", "why", until)
    assert hash(action) == hash(PlannedAction("a", "RETRAIN", "FULL", 3, "SKIPPED_COOLDOWN", "why", until))
    assert decide_module._planned("a", "RECORD", None, None, "RECORDED", "") == PlannedAction(
        "a", "RECORD", None, None, "RECORDED", "")
    request = decide_module._retrain("FULL", 4, ("a", "b"), 7)
    assert request == RetrainRequest("FULL", 4, ("a", "b"), 7)
    decision = decide_module._decision([action], request, None)
    assert decision == AlertDecision([action], request, None) and decision.alert_state == "SUPPRESSED"
    for obj, name in ((action, "decision"), (request, "mode"), (decision, "retrain")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, name, None)
    # What decide() returns is what the constructors would have built.
    got = decider().decide("m", [retrain("a"), record("b")])
    assert got == AlertDecision(
        [PlannedAction("b", "RECORD", None, None, "RECORDED", "record: rule matched"),
         PlannedAction("a", "RETRAIN", "FULL", 3, "QUEUED", "retrain full at priority high (merged from 1 rule(s))")],
        RetrainRequest("FULL", 3, ("a",), None), None)
