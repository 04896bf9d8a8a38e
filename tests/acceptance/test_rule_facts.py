"""One stored alert, the same facts everywhere a rule runs: live ingest, backtest and EvaluateRules all
build them with closedloop.dsl.facts, relative to the alert's arrival. The feedback report runs no
rule on a stored alert: which rules it was checked against depends on its type and model alone
(feedback/tally.py), so it counts both alerts without building their facts."""

from __future__ import annotations

import datetime as dt

import pytest

from closedloop.dsl import facts as dsl_facts

from .helpers import synthetic_model

AGE_RULES = """
rule old_news:
    when type == "drift" and age > 1h and model.registered
    then record
"""
UTC = dt.timezone.utc


@pytest.fixture
def seen(monkeypatch):
    """The AlertFacts and ModelFacts each path builds, by path."""
    from closedloop.server.api import rules as api_rules
    from closedloop.server.loop import backtest, ingest, model_cache

    got: dict[str, list] = {}

    def spy(module, name, path):
        real = getattr(module, name)

        def recording(**kwargs):
            out = real(**kwargs)
            got.setdefault(path, []).append(out)
            return out
        monkeypatch.setattr(module, name, recording)

    spy(ingest, "alert_facts", "ingest")
    spy(backtest, "alert_facts", "backtest")
    spy(api_rules, "alert_facts", "evaluate")
    spy(backtest, "model_facts", "backtest.model")
    spy(model_cache, "model_facts", "cache.model")
    return got


async def test_the_same_stored_alert_gives_the_same_facts_on_every_path(client, seen):
    await client.register_model(synthetic_model("facts"))
    await client.apply_rules(AGE_RULES, "age.rules")
    start = dt.datetime.now(UTC) - dt.timedelta(hours=3)
    old = await client.create_alert("facts", "drift", "high", metrics={"drift_score": 0.1},
                                    observe_time=dt.datetime.now(UTC) - dt.timedelta(hours=2))
    fresh = await client.create_alert("facts", "drift", "high", metrics={"drift_score": 0.1},
                                      observe_time=dt.datetime.now(UTC) - dt.timedelta(minutes=30))
    assert [a.rule for a in old.actions] == ["old_news"] and list(fresh.actions) == []
    live = {round(f.age_seconds) // 60: f for f in seen.pop("ingest")}
    assert sorted(live) == [30, 120]

    # EvaluateRules on the stored alert (create_time set) judges it as of its arrival.
    for stored, matched in ((old, True), (fresh, False)):
        resp = await client.evaluate_rules(await client.get_alert(stored.id))
        assert {e.rule: e.matched for e in resp.evaluations} == {"old_news": matched}
    # A backtest of the active rules finds nothing to change; the feedback report counts both.
    end = dt.datetime.now(UTC) + dt.timedelta(minutes=1)
    report = await client.backtest_rules(AGE_RULES, start, end)
    assert report.alerts == 2 and report.differences_total == 0
    assert {r.rule: r.matches for r in report.candidate.rules} == {"old_news": 1}
    feedback = await client.feedback_report(start_time=start, end_time=end)
    old_news = next(r.stats for r in feedback.rules if r.rule == "old_news")
    assert (old_news.triggers, old_news.evaluations_quiet) == (1, 1)

    stored_paths = ("evaluate", "backtest")
    for path in stored_paths:
        assert len(seen[path]) == 2, path
    for i in range(2):
        evaluate, backtested = (seen[p][i] for p in stored_paths)
        assert evaluate == backtested
        # Live ingest took the moment the request arrived, create_time the moment of the insert a
        # few milliseconds later: the same facts but for that gap in age.
        live_facts = live[round(evaluate.age_seconds) // 60]
        assert with_age(live_facts, evaluate.age_seconds) == evaluate
        assert abs(live_facts.age_seconds - evaluate.age_seconds) < 60
    # The model's facts, relative to the same moment, agree between the registry cache and history.
    assert seen["backtest.model"][-1] == seen["cache.model"][-1]


def with_age(facts: dsl_facts.AlertFacts, age: float) -> dsl_facts.AlertFacts:
    import dataclasses

    return dataclasses.replace(facts, age_seconds=age)
