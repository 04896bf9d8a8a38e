"""The language's meaning, table-driven: conditions against alerts and model facts, through the
compiled predicates, the index (match) and the reference interpreter alike."""

from __future__ import annotations

import pytest

from closedloop.dsl import ActionSpec, RuleCompileError, check, compile_rules
from closedloop.dsl.interpret import evaluate

from .helpers import DAY, alert, model, one_rule

A = alert
M = model()
NONE = None  # an unregistered model

# (condition, alert, model, expected match)
CASES = [
    # alert fields
    ('type == "drift"', A(type="drift"), M, True),
    ('type == "drift"', A(type="risk"), M, False),
    ('type != "drift"', A(type="risk"), M, True),
    ('model_id in ["m1", "m2"]', A(model_id="m2"), M, True),
    ('model_id not in ["m1", "m2"]', A(model_id="m2"), M, False),
    ('source == "monitor"', A(), M, True),
    ("severity >= medium", A(severity=2), M, True),
    ("severity >= medium", A(severity=1), M, False),
    ("severity == critical", A(severity=4), M, True),
    ("severity in [high, critical]", A(severity=3), M, True),
    ("severity < high", A(severity=3), M, False),
    ("age > 1h", A(age=7200), M, True),
    ("age == 1h30m", A(age=5400), M, True),
    ("age <= 90m", A(age=5401), M, False),
    # metrics and labels, present and missing
    ("metrics.x > 0.5", A(metrics={"x": 0.6}), M, True),
    ("metrics.x > 0.5", A(metrics={"x": 0.5}), M, False),
    ("metrics.x > 0.5", A(), M, False),
    ("metrics.x == 10%", A(metrics={"x": 0.1}), M, True),
    ("metrics.x >= 1.5e3", A(metrics={"x": 1500}), M, True),
    ('metrics["p&l"] < -1000', A(metrics={"p&l": -2000}), M, True),
    ('metrics["drift_score"] > 0.2', A(metrics={"drift_score": 0.3}), M, True),
    ("metrics.a.b > 1", A(metrics={"a.b": 2}), M, True),
    ('labels.desk == "fx"', A(labels={"desk": "fx"}), M, True),
    ('labels.desk == "fx"', A(), M, False),
    ('labels.desk != "fx"', A(), M, False),
    ('labels["venue-id"] in ["x", "y"]', A(labels={"venue-id": "y"}), M, True),
    ("has(metrics.x)", A(metrics={"x": 0}), M, True),
    ("has(metrics.x)", A(), M, False),
    ("not has(labels.desk)", A(), M, True),
    # three-valued logic: a missing value is neither true nor false
    ("not metrics.x > 0.5", A(), M, False),
    ("not metrics.x > 0.5", A(metrics={"x": 0.1}), M, True),
    ("metrics.a > 1 or metrics.b > 1", A(metrics={"b": 2}), M, True),
    ("metrics.a > 1 or metrics.b > 1", A(metrics={"b": 0}), M, False),
    ("not (metrics.a > 1 and metrics.b > 1)", A(metrics={"b": 0}), M, True),
    ("not (metrics.a > 1 or metrics.b > 1)", A(metrics={"b": 0}), M, False),
    ("not (metrics.a > 1 or metrics.b > 1)", A(metrics={"a": 0, "b": 0}), M, True),
    ("not has(metrics.x) or metrics.x > 5", A(), M, True),
    ("not has(metrics.x) or metrics.x > 5", A(metrics={"x": 1}), M, False),
    ('not (labels.desk == "fx")', A(), M, False),
    ('not (labels.desk == "fx")', A(labels={"desk": "eq"}), M, True),
    # arithmetic and functions
    ("metrics.x * 2 + 1 > 3", A(metrics={"x": 1.5}), M, True),
    ("metrics.a - metrics.b - 1 > 0", A(metrics={"a": 5, "b": 3}), M, True),
    ("metrics.a - (metrics.b - 1) > 3", A(metrics={"a": 5, "b": 3}), M, False),
    ("metrics.a / metrics.b > 2", A(metrics={"a": 5, "b": 2}), M, True),
    ("metrics.a / metrics.b > 2", A(metrics={"a": 5, "b": 0}), M, False),
    ("not (metrics.a / metrics.b > 2)", A(metrics={"a": 5, "b": 0}), M, False),
    ("metrics.a / (metrics.b - 2) > 0 or true", A(metrics={"a": 1, "b": 2}), M, True),
    ("-metrics.x > 1", A(metrics={"x": -2}), M, True),
    ("abs(metrics.pnl) > 100", A(metrics={"pnl": -150}), M, True),
    ("min(metrics.a, metrics.b) > 1", A(metrics={"a": 2, "b": 3}), M, True),
    ("max(metrics.a, metrics.b, 0) < 1", A(metrics={"a": 2}), M, False),
    ("max(age, 1h) == 1h", A(age=60), M, True),
    # model facts
    ("model.age > 30d", A(), model(age=40 * DAY), True),
    ("model.age > 30d", A(), model(age=20 * DAY), False),
    ("model.age > 30d", A(), NONE, False),
    ("model.age > 30d", A(), model(age=None), False),
    ("model.age > 1w + 2d", A(), model(age=10 * DAY), True),
    ("model.age / 1d > 30", A(), model(age=31 * DAY), True),
    ("model.age - model.last_retrained > 1d", A(), model(age=5 * DAY, last_retrained=1 * DAY), True),
    ("model.last_retrained < 1d", A(), model(last_retrained=None), False),
    ("model.version >= 3", A(), model(version=3), True),
    ("model.registered", A(), NONE, False),
    ("not model.registered", A(), NONE, True),
    ("model.registered", A(), M, True),
    ("model.enabled", A(), model(enabled=False), False),
    ("not model.enabled", A(), model(enabled=False), True),
    ("not model.enabled", A(), NONE, False),
    ("has(model.age)", A(), model(age=None), False),
    ("model.enabled == true", A(), M, True),
    # constants
    ("true", A(), M, True),
    ("false or true", A(), M, True),
    # exact literals (issue 11): a percentage is the decimal it names, rounded once
    ("metrics.ratio >= 12.3%", A(metrics={"ratio": 0.123}), M, True),
    ("metrics.ratio == 1.1%", A(metrics={"ratio": 0.011}), M, True),
    ("metrics.ratio == 0.1%", A(metrics={"ratio": 0.001}), M, True),
    ("metrics.ratio == 199.9%", A(metrics={"ratio": 1.999}), M, True),
    ("metrics.x == 9007199254740992", A(metrics={"x": 2.0**53}), M, True),
    ("metrics.x > 1.7e308", A(metrics={"x": 1.75e308}), M, True),
    ("age == 1.1h", A(age=3960), M, True),
    ("metrics.ratio == 12.3% + 0", A(metrics={"ratio": 0.123}), M, True),
]


@pytest.mark.parametrize("condition,facts,model_facts,expected", CASES, ids=[c[0] for c in CASES])
def test_condition(condition, facts, model_facts, expected):
    rules = one_rule(condition)
    assert bool(rules.match(facts, model_facts)) is expected
    assert bool(rules.match_all(facts, model_facts)) is expected
    checked = rules._compiled[0].checked.condition
    assert (evaluate(checked, facts, model_facts) is True) is expected


class RecordingDict(dict):
    """A metrics map that remembers which keys a rule read."""

    def __init__(self, *args):
        super().__init__(*args)
        self.read: list[str] = []

    def get(self, key, default=None):
        self.read.append(key)
        return super().get(key, default)

    def __contains__(self, key):
        self.read.append(key)
        return super().__contains__(key)


@pytest.mark.parametrize(
    "condition,metrics,read",
    [
        ("metrics.a > 1 and metrics.b > 1", {"a": 0, "b": 5}, ["a"]),
        ("metrics.a > 1 and metrics.b > 1", {"a": 2, "b": 5}, ["a", "b"]),
        ("metrics.a > 1 or metrics.b > 1", {"a": 2, "b": 5}, ["a"]),
        ("metrics.a > 1 or metrics.b > 1", {"b": 5}, ["a", "b"]),
        ("has(metrics.a) and metrics.a / metrics.b > 1", {"b": 1}, ["a"]),
        ('type == "risk" and metrics.a > 1', {"a": 5}, []),
        ("not (metrics.a > 1 or metrics.b > 1)", {"a": 2, "b": 0}, ["a"]),
    ],
)
def test_short_circuit_left_to_right(condition, metrics, read):
    rules = one_rule(condition)
    facts = RecordingDict(metrics)
    rules.match_all(A(type="drift", metrics=facts), M)
    assert facts.read == read


def test_missing_values_never_raise():
    rules = compile_rules(
        "rule a: when metrics.x / metrics.y > 1 then record\n"
        "rule b: when labels.l == \"x\" or model.age > 1d then record\n"
        "rule c: when abs(metrics.x - model.version) < min(metrics.y, 1) then record\n",
        "t.rules",
    )
    for facts in (A(), A(metrics={"x": 1, "y": 0}), A(metrics={"x": float("inf"), "y": 0})):
        for m in (None, model(age=None, last_retrained=None)):
            assert rules.match(facts, m) == []


def test_actions_and_rule_info():
    rules = compile_rules(
        'rule a "Title \\"quoted\\"":\n'
        '    when type in ["drift", "risk"] and metrics.x > 0.5\n'
        "    then retrain incremental priority critical cooldown 1h30m per model, notify\n\n"
        "rule b:\n    when true\n    then rollback priority high cooldown 2d, record\n",
        "t.rules",
    )
    a, b = rules.rules
    assert a.name == "a" and a.title == 'Title "quoted"' and a.line == 1
    assert a.condition == 'type in ["drift", "risk"] and metrics.x > 0.5'
    assert a.alert_types == ("drift", "risk") and a.model_ids is None
    assert a.actions == (
        ActionSpec("retrain", "incremental", 4, 5400.0, True),
        ActionSpec("notify", None, None, None, False),
    )
    assert a.actions[0].describe() == "retrain incremental priority critical cooldown 1h30m per model"
    assert b.title == "" and b.line == 5 and b.alert_types is None
    assert b.actions == (ActionSpec("rollback", None, 3, 172800.0, False), ActionSpec("record"))
    got = rules.match(A(type="risk", metrics={"x": 1}), M)
    assert [m.rule for m in got] == ["a", "b"]
    assert got[0].actions == a.actions


@pytest.mark.parametrize(
    "condition,types,models",
    [
        ('type == "drift"', ("drift",), None),
        ('"drift" == type', ("drift",), None),
        ('type in ["b", "a"]', ("a", "b"), None),
        ('type == "a" or type == "b"', ("a", "b"), None),
        ('(type == "a" or type == "b") and type != "c"', ("a", "b"), None),
        ('type == "a" or metrics.x > 1', None, None),
        ('not type == "a"', None, None),
        ('type not in ["a"]', None, None),
        ('type == "a" and model_id == "m1"', ("a",), ("m1",)),
        ('model_id in ["m1", "m2"] and metrics.x > 1', None, ("m1", "m2")),
        ('type in ["a", "b"] and type in ["b", "c"]', ("b",), None),
    ],
)
def test_index_selectors(condition, types, models):
    info = one_rule(condition).rules[0]
    assert info.alert_types == types
    assert info.model_ids == models


def test_index_checks_only_candidates_and_loses_no_match():
    lines = []
    for i in range(300):
        if i % 3 == 0:
            cond = f'type == "t{i % 7}" and metrics.x > {i / 300:.3f}'
        elif i % 3 == 1:
            cond = f'type in ["t{i % 5}", "t{i % 7}"] and model_id == "m{i % 11}"'
        else:
            cond = f"metrics.x > {i / 300:.3f} and severity >= high" if i % 2 else f'model_id == "m{i % 4}" or metrics.y > 0.5'
        lines.append(f"rule r{i}: when {cond} then record")
    rules = compile_rules("\n".join(lines), "many.rules")
    evaluated = rules.evaluated_rules(A(type="t3", model_id="m2"))
    assert len(evaluated) < 150
    assert "r3" in evaluated and "r0" not in evaluated  # r0 wants t0
    import random

    rng = random.Random(1)
    for _ in range(300):
        facts = A(
            type=f"t{rng.randrange(8)}",
            model_id=f"m{rng.randrange(12)}",
            severity=rng.randint(1, 4),
            metrics={k: rng.random() for k in ("x", "y") if rng.random() < 0.8},
        )
        assert rules.match(facts, M) == rules.match_all(facts, M)
        names = {m.rule for m in rules.match(facts, M)}
        assert names <= set(rules.evaluated_rules(facts))


def test_thresholds_and_min_model_age():
    rules = compile_rules(
        "rule a: when 0.25 < metrics.drift and metrics.drop >= 10% then record\n"
        "rule b: when metrics.pnl > -1000 or model.age > 30d then record\n"
        "rule c: when 7d <= model.age and model.age < 90d then record\n",
        "t.rules",
    )
    got = [(t.rule, t.field, t.op, t.value, t.line, t.column) for t in rules.thresholds()]
    assert got == [
        ("a", "metrics.drift", ">", 0.25, 1, 14),
        ("a", "metrics.drop", ">=", 0.1, 1, 39),
        ("b", "metrics.pnl", ">", -1000.0, 2, 14),
    ]
    assert rules.min_model_age_seconds() == 7 * DAY
    assert one_rule("true").min_model_age_seconds() is None


def test_explain_values_per_clause():
    rules = compile_rules(
        'rule a: when type == "drift" and metrics.x > 1 and severity >= high then retrain full priority low cooldown 1h\n'
        'rule b: when metrics.x > 1 or type == "drift" then notify\n',
        "t.rules",
    )
    a, b = rules.explain(A(type="drift", severity=4), M)
    assert a.matched is None and a.actions == ()
    assert a.clauses == [('type == "drift"', True), ("metrics.x > 1", None), ("severity >= high", True)]
    assert b.matched is True and b.actions == (ActionSpec("notify"),)
    assert b.clauses == [("metrics.x > 1", None), ('type == "drift"', True)]


def test_check_reports_and_compile_raises():
    source = "rule ok: when true then record\nrule bad: when model.age > 3 then record\n"
    result = check(source, "f.rules")
    assert not result.ok
    assert [r.name for r in result.rules] == ["ok"]
    with pytest.raises(RuleCompileError) as err:
        compile_rules(source, "f.rules")
    assert [(d.line, d.column, d.code) for d in err.value.errors] == [(2, 16, "type-mismatch")]
    assert "f.rules:2:16: error: cannot compare duration with number" in str(err.value)
    assert "^~~" in err.value.render()


def test_warnings_do_not_stop_compilation():
    rules = compile_rules("rule r: when true then retrain full priority high\n", "w.rules")
    assert [d.code for d in rules.diagnostics] == ["no-cooldown"]
    assert rules.sha256 and rules.filename == "w.rules" and len(rules) == 1


def test_check_never_raises_on_wrong_input_type():
    result = check(b"rule r: when true then record", "b.rules")  # type: ignore[arg-type]
    assert [d.code for d in result.diagnostics] == ["bad-input"]
