"""Small builders shared by the DSL tests."""

from __future__ import annotations

from closedloop.dsl import AlertFacts, ModelFacts, compile_rules

DAY = 86400.0


def alert(type="drift", model_id="m1", severity=2, metrics=None, labels=None, source="monitor", age=0.0) -> AlertFacts:
    return AlertFacts(type, model_id, severity, metrics if metrics is not None else {}, labels if labels is not None else {}, source, age)


def model(registered=True, enabled=True, version=3, age=10 * DAY, last_retrained=2 * DAY) -> ModelFacts:
    return ModelFacts(registered, enabled, version, age, last_retrained)


def one_rule(condition: str, actions: str = "record"):
    return compile_rules(f"rule r:\n    when {condition}\n    then {actions}\n", "test.rules")
