"""The bundled rules behave as issue 3 says, and are what the server's age sweep expects."""

from __future__ import annotations

import pytest

from closedloop.dsl import ActionSpec, check, compile_rules, load_default_rules

from .helpers import DAY, alert, model

SOURCE, FILENAME = load_default_rules()
RULES = compile_rules(SOURCE, FILENAME)


def test_loads_clean():
    assert FILENAME == "default.rules"
    assert check(SOURCE, FILENAME).diagnostics == []
    assert [r.name for r in RULES.rules] == [
        "drift_auto_retrain",
        "performance_auto_retrain",
        "model_age_auto_retrain",
        "risk_auto_retrain",
    ]
    assert [r.alert_types for r in RULES.rules] == [("drift",), ("performance",), ("age",), ("risk",)]
    assert all(a.cooldown_seconds for r in RULES.rules for a in r.actions)


@pytest.mark.parametrize(
    "facts,model_facts,expected",
    [
        (alert("drift", metrics={"drift_score": 0.3}), model(), ("drift_auto_retrain", ActionSpec("retrain", "full", 3, DAY))),
        (alert("drift", metrics={"drift_score": 0.2}), model(), None),
        (alert("drift"), model(), None),
        (alert("performance", severity=1, metrics={"performance_drop": 0.5}), model(), None),
        (
            alert("performance", severity=2, metrics={"performance_drop": 0.11}),
            model(),
            ("performance_auto_retrain", ActionSpec("retrain", "incremental", 2, 12 * 3600.0)),
        ),
        (alert("performance", severity=4, metrics={"performance_drop": 0.05}), model(), None),
        (alert("risk", metrics={"risk_score": 85}), model(), ("risk_auto_retrain", ActionSpec("retrain", "full", 4, 3600.0))),
        (alert("risk", metrics={"risk_score": 80}), model(), None),
        (alert("age"), model(age=40 * DAY), ("model_age_auto_retrain", ActionSpec("retrain", "incremental", 1, 7 * DAY))),
        (alert("age"), model(age=20 * DAY), None),
        (alert("age"), None, None),
        (alert("drift", metrics={"drift_score": 0.3}), model(age=90 * DAY), ("drift_auto_retrain", ActionSpec("retrain", "full", 3, DAY))),
    ],
)
def test_default_behaviour(facts, model_facts, expected):
    got = RULES.match(facts, model_facts)
    if expected is None:
        assert got == []
    else:
        assert [(m.rule, m.actions) for m in got] == [(expected[0], (expected[1],))]


def test_index_and_sweep_facts():
    assert RULES.evaluated_rules(alert("age")) == ["model_age_auto_retrain"]
    assert RULES.evaluated_rules(alert("unknown")) == []
    assert RULES.min_model_age_seconds() == 30 * DAY
    assert [(t.field, t.op, t.value) for t in RULES.thresholds()] == [
        ("metrics.drift_score", ">", 0.25),
        ("metrics.performance_drop", ">", 0.1),
        ("metrics.risk_score", ">", 80.0),
    ]
