"""alert_facts() and model_facts() write the slots of the frozen fact classes directly (they run for
every alert ingested or replayed): what they build must be exactly what the classes' own
constructors build, as immutable, and the plan the rule set gives a backtest must say truly
whether a model fact is read."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random

import pytest

from closedloop.dsl import AlertFacts, ModelFacts, compile_rules
from closedloop.dsl.facts import alert_facts, model_facts

from .helpers import alert, model

T0 = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize("lag", [0.0, 0.25, 3600.0, -5.0])
def test_alert_facts_equal_the_constructors_and_stay_frozen(lag):
    metrics, labels = {"drift_score": 0.3}, {"desk": "fx"}
    built = alert_facts(type="drift", model_id="m1", severity=3, metrics=metrics, labels=labels, source="mon",
                        observe_time=T0, received=T0 + dt.timedelta(seconds=lag))
    assert built == AlertFacts("drift", "m1", 3, metrics, labels, "mon", max(0.0, lag))
    assert type(built.age_seconds) is float
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.severity = 4  # type: ignore[misc]
    assert dataclasses.replace(built, severity=1).severity == 1


@pytest.mark.parametrize("since", [None, T0 - dt.timedelta(days=2), T0 + dt.timedelta(seconds=1)])
def test_model_facts_equal_the_constructors_and_stay_frozen(since):
    built = model_facts(enabled=False, version=4, version_time=since, retrained_time=since, received=T0)
    seconds = None if since is None else max(0.0, (T0 - since).total_seconds())
    assert built == ModelFacts(True, False, 4, seconds, seconds)
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.version = 5  # type: ignore[misc]


def test_a_plan_says_whether_its_rules_read_model_facts():
    rules = compile_rules('''
rule drift:
    when type == "drift" and metrics.drift_score > 0.25
    then record

rule old:
    when type == "age" and model.age > 30d
    then record

rule known:
    when type in ["risk", "age"] and has(model.version)
    then record
''', "plan.rules")
    assert [m.rule for _, m in rules.plan("drift", "m1").rules] == ["drift"]
    assert not rules.plan("drift", "m1").reads_model
    assert rules.plan("age", "m1").reads_model and rules.plan("risk", "m2").reads_model
    assert rules.plan("data_quality", "m1").rules == ()


@pytest.mark.parametrize("names_a_model", [False, True])
def test_cached_plans_match_like_every_rule_through_cache_resets(names_a_model):
    """Plans are cached per alert type when no rule names a model, per (type, model) otherwise,
    and the caches are dropped past their size: matches stay those of evaluating every rule."""
    source = '''
rule drift:
    when type == "drift" and metrics.x > 0.5
    then record

rule any_type:
    when metrics.x > 0.9 or model.age > 1d
    then record
'''
    if names_a_model:
        source += '''
rule m3_only:
    when model_id == "m3" and type in ["drift", "risk"]
    then record
'''
    rules = compile_rules(source, "cache.rules")
    rules._PLAN_CACHE = 5  # instance override: reset often
    rng = random.Random(3)
    for _ in range(400):
        facts = alert(type=rng.choice(["drift", "risk", "age", "other"]), model_id=f"m{rng.randrange(6)}",
                      metrics={"x": rng.random()})
        m = model(age=rng.choice([0.0, 2 * 86400.0])) if rng.random() < 0.8 else None
        assert rules.match(facts, m) == rules.match_all(facts, m)
        assert {r.rule for r in rules.match(facts, m)} <= set(rules.evaluated_rules(facts))
