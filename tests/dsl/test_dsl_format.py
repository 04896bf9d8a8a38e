"""`rules fmt`: canonical, idempotent, and never a change of meaning."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from closedloop.dsl import RuleCompileError, check, compile_rules, format_source, load_default_rules
from closedloop.dsl.parser import parse_source

from .strategies import alerts, conditions, models

MESSY = """\
# header comment

# about a
rule a   "Title":   when type=="drift" and(metrics.x>0.5 or metrics["y"] <= 10%)
  then retrain   full priority high cooldown 24h   # trailing note
rule b: when not (labels.desk == "fx") and ((metrics.a - (metrics.b - 1))) > 2 and -(-metrics.c) < 1 then record,notify



rule c: when type == "performance" and severity >= medium and metrics.performance_drop > 10% and model.age > 30d and metrics["odd-key"] != 3 then retrain incremental priority medium cooldown 12h per model
# footer
"""

CANONICAL = """\
# header comment

# about a
# trailing note
rule a "Title":
    when type == "drift" and (metrics.x > 0.5 or metrics.y <= 10%)
    then retrain full priority high cooldown 24h

rule b:
    when not (labels.desk == "fx")
        and metrics.a - (metrics.b - 1) > 2
        and -(-metrics.c) < 1
    then record, notify

rule c:
    when type == "performance"
        and severity >= medium
        and metrics.performance_drop > 10%
        and model.age > 30d
        and metrics["odd-key"] != 3
    then retrain incremental priority medium cooldown 12h per model

# footer
"""


def test_canonical_form():
    assert format_source(MESSY, "m.rules") == CANONICAL


@pytest.mark.parametrize("text", [MESSY, CANONICAL, load_default_rules()[0], "", "# only a comment\n"])
def test_idempotent(text):
    once = format_source(text, "x.rules")
    assert format_source(once, "x.rules") == once


def test_default_rules_are_canonical():
    source, filename = load_default_rules()
    assert format_source(source, filename) == source


BAD = sorted((Path(__file__).parent / "bad").glob("*.rules"))


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_idempotent_on_corpus_files_that_parse(path):
    text = path.read_text()
    if not parse_source(text, path.name).ok:
        with pytest.raises(RuleCompileError):
            format_source(text, path.name)
        return
    once = format_source(text, path.name)
    assert format_source(once, path.name) == once


def _same_matches(source: str, formatted: str, cases) -> None:
    before, after = compile_rules(source, "a.rules"), compile_rules(formatted, "b.rules")
    assert [r.condition for r in before.rules] == [r.condition for r in after.rules]
    for facts, model_facts in cases:
        assert before.match(facts, model_facts) == after.match(facts, model_facts)


@settings(max_examples=100, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(
    conds=st.lists(conditions, min_size=1, max_size=3),
    cases=st.lists(st.tuples(alerts, models), min_size=1, max_size=6),
)
def test_formatting_preserves_meaning(conds, cases):
    source = "\n".join(f"rule r{i}: when {c} then record" for i, c in enumerate(conds))
    assume(check(source, "g.rules").ok)
    formatted = format_source(source, "g.rules")
    assert format_source(formatted, "g.rules") == formatted
    _same_matches(source, formatted, cases)


def test_messy_file_keeps_its_meaning():
    import random

    from .helpers import alert, model

    rng = random.Random(3)
    cases = [
        (
            alert(
                type=rng.choice(["drift", "performance"]),
                severity=rng.randint(1, 4),
                metrics={k: rng.random() * 3 for k in ("x", "y", "a", "b", "c", "performance_drop", "odd-key") if rng.random() < 0.7},
                labels={"desk": rng.choice(["fx", "eq"])} if rng.random() < 0.5 else {},
            ),
            model(age=rng.choice([1, 40]) * 86400.0),
        )
        for _ in range(300)
    ]
    _same_matches(MESSY, format_source(MESSY, "m.rules"), cases)


def test_unparsable_source_raises_with_diagnostics():
    with pytest.raises(RuleCompileError) as err:
        format_source("rule r: when then record\n", "u.rules")
    assert err.value.diagnostics[0].line == 1 and err.value.diagnostics[0].column == 14
