"""The generated code: same meaning as the reference interpreter, and no rule text inside it."""

from __future__ import annotations

import io
import keyword
import re
import tokenize

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from closedloop.dsl import check, compile_rules
from closedloop.dsl.compiler import compile_conditions, generated_source
from closedloop.dsl.interpret import evaluate

from .helpers import alert, model, one_rule
from .strategies import alerts, conditions, models

FAST = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(condition=conditions, cases=st.lists(st.tuples(alerts, models), min_size=1, max_size=8))
def test_compiled_code_agrees_with_interpreter(condition, cases):
    source = f"rule r:\n    when {condition}\n    then record\n"
    result = check(source, "p.rules")
    assume(result.ok)
    assert not any(d.code == "internal" for d in result.diagnostics)
    rules = compile_rules(source, "p.rules")
    checked = rules._compiled[0].checked.condition
    for facts, model_facts in cases:
        assert bool(rules.match_all(facts, model_facts)) == (evaluate(checked, facts, model_facts) is True)


ALLOWED_NAMES = {"a", "m", "def", "return", "if", "and", "or", "not", "in", "is", "None", "True", "False"}
ALLOWED_NAMES |= {"metrics", "labels", "get", "type", "model_id", "severity", "source", "age_seconds"}
ALLOWED_NAMES |= {"registered", "enabled", "version", "last_retrained_seconds", "_nm", "_abs", "_min", "_max"}
GENERATED = re.compile(r"_[krv]\d+")


def test_no_rule_text_reaches_the_generated_code():
    hostile = (
        'rule r: when labels["__import__(\'os\').system(\'x\')"] == "\\"); import os; (\\"" '
        'and metrics["exec"] > 1e308 and metrics.__class__ > 1 and type in ["a\\nb", "c"] '
        "then record"
    )
    rules = compile_rules(hostile, "hostile.rules")
    source, constants = generated_source(rules._compiled[0].checked.condition)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME:
            assert tok.string in ALLOWED_NAMES or GENERATED.fullmatch(tok.string), tok.string
        assert tok.type != tokenize.STRING, tok.string
        if tok.type == tokenize.NUMBER:
            assert tok.string == "0"
    assert "__import__('os').system('x')" in constants.values()
    assert rules.match(alert(labels={"__import__('os').system('x')": '"); import os; ("'}, metrics={"exec": 1e309, "__class__": 2}, type="c"), None)


def test_generated_code_reads_like_the_rule():
    rules = one_rule('type == "drift" and metrics.drift_score > 0.25')
    source, constants = generated_source(rules._compiled[0].checked.condition)
    assert source == (
        "def _r0(a, m):\n"
        "    return a.type == _k0 and (_v1 := a.metrics.get(_k1)) is not None and _v1 > _k2"
    )
    assert constants == {"_k0": "drift", "_k1": "drift_score", "_k2": 0.25}
    assert not any(keyword.iskeyword(k) for k in constants)


def test_falls_back_to_the_interpreter_when_python_refuses(monkeypatch):
    import closedloop.dsl.compiler as compiler

    real_compile = compile

    def refusing(source, *args, **kwargs):
        if "_r1" in source:
            raise RecursionError("too deep for this Python")
        return real_compile(source, *args, **kwargs)

    monkeypatch.setattr(compiler, "compile", refusing, raising=False)
    rules = compile_rules("rule a: when metrics.x > 1 then record\nrule b: when metrics.x > 2 then record\n", "f.rules")
    facts = alert(metrics={"x": 3})
    assert [m.rule for m in rules.match(facts, model())] == ["a", "b"]
    assert rules.predicates[1].__name__ == "predicate"  # the interpreter closure


def test_compile_conditions_of_deep_allowed_nesting():
    depth_62 = "(" * 61 + "metrics.x" + " + 1)" * 61 + " > 0"
    rules = one_rule(depth_62)
    assert rules.match(alert(metrics={"x": 0}), None)
    assert compile_conditions([]) == []
