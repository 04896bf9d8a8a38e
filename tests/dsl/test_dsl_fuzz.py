"""Whatever text arrives (ValidateRules takes it from the network), check() answers with
diagnostics only: no exception, no internal error, no hang."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from closedloop.dsl import RuleCompileError, check, format_source

# 2 cores, shared with the rest of the suite: each example gets up to 2 s, the whole file ~10 s.
FUZZ = settings(max_examples=250, deadline=2000, suppress_health_check=[HealthCheck.too_slow])

TOKENS = [
    "rule", "when", "then", "and", "or", "not", "in", "true", "false", "r1", "r2", ":", ",", ".", "(", ")", "[",
    "]", "==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "=", "!", "'", '"', '"drift"', '"unterminated',
    '"\\q"', "type", "severity", "medium", "mediun", "metrics", "metrics.x", "labels.desk", "model", "model.age",
    "model.agee", "has", "abs", "min", "max", "foo", "30d", "24h", "30x", "1h30m", "10%", "1.2.3", "0", "1e-3",
    "retrain", "full", "incremental", "priority", "high", "cooldown", "per", "record", "notify", "rollback",
    "#", "# comment\n", "\n", "  ", "\t", "é", "\x00", "\\",
]  # fmt: skip


def _assert_only_diagnostics(source: str) -> None:
    result = check(source, "fuzz.rules")
    for d in result.diagnostics:
        assert d.code != "internal", d
        assert d.line >= 1 and d.column >= 1
        d.render(source)  # rendering never fails either
    try:
        formatted = format_source(source, "fuzz.rules")
    except RuleCompileError:
        return
    assert format_source(formatted, "fuzz.rules") == formatted


@FUZZ
@given(st.text(max_size=400))
def test_random_text(source):
    _assert_only_diagnostics(source)


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=60).map(" ".join))
def test_random_token_sequences(source):
    _assert_only_diagnostics(source)


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=40).map(lambda ts: "rule r: when " + " ".join(ts)))
def test_random_conditions_after_a_rule_header(source):
    _assert_only_diagnostics(source)
