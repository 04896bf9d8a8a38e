"""Issue 11, the language at its edges: exact numbers, positions for any text, bounded cost.

Cost is asserted by counting (characters parsed, line indexes built, collections run, peak
allocations per token), never by the clock; bench/dsl_limits.py has the timings."""

from __future__ import annotations

import gc
import tracemalloc
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import closedloop.dsl.parser as parser
import closedloop.dsl.text as text_module
from closedloop.dsl import (
    Limits,
    RuleCompileError,
    check,
    check_limits,
    compile_rules,
    decode_source,
    format_source,
)
from closedloop.dsl.diagnostics import render_all
from closedloop.dsl.parser import parse_source
from closedloop.dsl.schema import parse_numeric

from .helpers import alert

# --- exact numbers ------------------------------------------------------------------------------

decimals = st.tuples(st.integers(0, 10**12), st.integers(0, 10**8)).map(lambda t: f"{t[0]}.{t[1]}")


@given(decimals)
def test_percent_literals_equal_their_exact_decimal(text):
    assert parse_numeric(text + "%").value == float(Fraction(text) / 100)


@given(st.one_of(decimals, st.integers(0, 2**53).map(str)))
def test_number_literals_equal_their_exact_decimal(text):
    assert parse_numeric(text).value == float(Fraction(text))


@given(st.integers(1, 1999))
def test_a_one_decimal_percentage_matches_its_value(tenths):
    literal = f"{tenths // 10}.{tenths % 10}%"
    value = float(Fraction(tenths, 1000))
    rules = compile_rules(f"rule r: when metrics.x == {literal} then record\n")
    assert rules.match(alert(metrics={"x": value}), None), literal


def test_out_of_range_literals_and_overflow_are_errors_with_positions():
    got = check("rule r: when metrics.x > 1e400 or metrics.x > 1e308 * 1e308 then record\n").diagnostics
    assert [(d.column, d.code) for d in got] == [(26, "bad-literal"), (47, "overflow")]
    assert "integers up to 9007199254740992 are exact" in check("rule r: when metrics.x > 9007199254740993 then record").diagnostics[0].message
    assert check("rule r: when metrics.x > 9007199254740992 then record").ok


# --- positions for any text -----------------------------------------------------------------------

BREAKS = ["\n", "\r\n", "\r", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029"]


@pytest.mark.parametrize("brk", BREAKS, ids=[repr(b) for b in BREAKS])
def test_every_line_break_counts_the_same_in_parser_and_diagnostics(brk):
    source = brk.join(["# one", "", "rule r:", "    when model.age > 30", "    then record", ""])
    (d,) = check(source, "x.rules").diagnostics
    assert (d.line, d.column) == (4, 10)
    assert d.render(source).splitlines()[1] == "        when model.age > 30"
    assert source.splitlines()[d.line - 1] == "    when model.age > 30"  # the rule of str.splitlines


def test_a_comment_before_a_lone_cr_does_not_swallow_the_file():
    source = "# comment\rrule a: when true then record\r# another\rrule b: when model.age > 1 then record\r"
    result = check(source, "cr.rules")
    assert [r.name for r in result.rules] == ["a"]
    assert [(d.line, d.code) for d in result.diagnostics] == [(4, "type-mismatch")]
    assert format_source(source).count("rule ") == 2


def test_invalid_utf8_and_bom():
    text, error = decode_source(b"\xef\xbb\xbfrule a: when true then record\n# caf\xc3\xa9 \xff\n")
    assert text == "" and (error.line, error.column) == (2, 8) and "0xff" in error.message
    text, error = decode_source(b"\xef\xbb\xbfrule a: when true then record\n")
    assert error is None and text.startswith("rule a") and check(text).ok


def test_long_lines_are_cut_around_the_column():
    source = "rule r: when " + "true and " * 5_000 + "model.age > 1" + " and true" * 5_000 + " then record\n"
    (d,) = check(source).diagnostics
    head, line, caret = d.render(source).split("\n")
    assert len(line) < 200 and line.strip().startswith("...") and line.endswith("...")
    assert line[caret.index("^") :].startswith("model.age > 1")


def test_bidi_controls_warn_but_compile():
    source = 'rule r "\u202eevil": # \u2067\n    when true\n    then record\n'
    result = check(source)
    assert [(d.line, d.column, d.severity) for d in result.diagnostics] == [(1, 9, "warning"), (1, 19, "warning")]
    assert len(compile_rules(source)) == 1


# --- bounded cost ----------------------------------------------------------------------------------


def test_token_and_list_limits_have_their_own_diagnostics():
    small = Limits(max_tokens=6)
    assert [(d.line, d.column, d.code) for d in check_limits("rule r:\n when true then record", limits=small)] == [
        (2, 17, "limit-tokens")
    ]
    assert check_limits("rule r: when true then record # a long comment is not tokens", limits=Limits(max_tokens=7)) == []
    got = check("rule r: when metrics.x in [1, 2, 3] then record", limits=Limits(max_list=2)).diagnostics
    assert [(d.column, d.code) for d in got] == [(27, "limit-list")]


def test_fmt_never_writes_what_check_refuses():
    source = "rule a: when true then record"
    assert check(source, limits=Limits(max_bytes=35)).ok
    with pytest.raises(RuleCompileError) as exc:
        format_source(source, limits=Limits(max_bytes=35))
    assert exc.value.diagnostics[0].code == "limit-size" and "not written" in exc.value.diagnostics[0].message


def test_one_broken_rule_does_not_reparse_the_file(monkeypatch):
    parsed = []
    real = parser._lark()

    class Counting:
        def parse(self, text):
            parsed.append(len(text))
            return real.parse(text)

    monkeypatch.setattr(parser, "_lark", lambda: Counting())
    good = "".join(f"rule r{i}: when metrics.x > {i} then record\n" for i in range(2000))
    source = good + "rule broken: when metrics.x > then record\n" + good.replace("rule r", "rule s")
    result = check(source)
    assert [d.code for d in result.diagnostics] == ["syntax"] and len(result.rules) == 4000
    assert sum(parsed) < 1.05 * len(source)


def test_rendering_many_diagnostics_indexes_the_source_once(monkeypatch):
    built = []

    class Counting(text_module.Lines):
        def __init__(self, text):
            built.append(1)
            super().__init__(text)

    source = "".join(f"rule r{i}: when model.age > 1 then record\n" for i in range(3000))
    diagnostics = check(source).diagnostics
    monkeypatch.setattr(text_module, "Lines", Counting)
    monkeypatch.setattr(text_module, "_last", None)
    assert render_all(diagnostics, source).count("\n") == 3 * 3000 - 1
    assert len(built) == 1


def test_check_and_fmt_run_without_the_cyclic_collector():
    collections = []

    def count(phase, info):
        if phase == "start":
            collections.append(info["generation"])

    source = "".join(f'rule r{i} "t": when type == "drift" and metrics.x > {i} then record\n' for i in range(3000))
    gc.collect()
    gc.callbacks.append(count)
    try:
        format_source(source)
        parse_source(source, "x.rules")
    finally:
        gc.callbacks.remove(count)
    # at most the one collection that runs when the collector resumes, per call (hundreds without)
    assert len(collections) <= 2, collections


SHAPES = {
    "realistic rules": lambda i: f'rule r{i} "Drift for model {i}":\n    when type == "drift" and metrics.drift_score > 0.25 and severity >= medium\n    then retrain full priority high cooldown 24h\n',
    "long lists": lambda i: f"rule r{i}: when metrics.x in [{', '.join('1' for _ in range(1000))}] then record\n",
    "and chains": lambda i: f"rule r{i}: when {' and '.join(f'metrics.m{k} > {k}' for k in range(500))} then record\n",
    "type errors": lambda i: f"rule r{i}: when model.age > 30 then record\n",
}
TOKENS = 40_000  # a tenth or so of the default limit: the bound is per token


@pytest.mark.parametrize("shape", SHAPES)
def test_memory_per_token_is_bounded(shape):
    """200 MB for the default max_tokens: 700 bytes of peak allocation per token, at any size."""
    make = SHAPES[shape]
    per_rule = sum(1 for m in parser._TOKENS.finditer(make(99_999)) if m.group(1) is None)
    source = "".join(make(i) for i in range(TOKENS // per_rule))
    assert check_limits(source, limits=Limits(max_tokens=TOKENS)) == []
    tracemalloc.start()
    try:
        check(source, limits=Limits(max_tokens=TOKENS))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak / TOKENS < 200e6 / Limits().max_tokens, f"{peak / TOKENS:.0f} bytes per token"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["rule", "when", "then", "true", "record", "x1", ":", "#", '"', "\\", " ", "\u202e", "\ufeff", *BREAKS]), max_size=60).map("".join))
def test_any_text_with_any_line_breaks_gives_diagnostics_only(source):
    result = check(source, "any.rules")
    assert all(d.code != "internal" for d in result.diagnostics)
    for d in result.diagnostics:
        d.render(source)
    try:
        formatted = format_source(source)
    except RuleCompileError:
        return
    assert parse_source(formatted, "f.rules").ok  # fmt's output always passes the parser
