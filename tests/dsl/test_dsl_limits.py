"""Limits: file size, rule count and expression depth, each with its own diagnostic, and no
Python recursion error however deep the input nests."""

from __future__ import annotations

import time

import pytest

from closedloop.dsl import Limits, check, compile_rules


def codes(source: str, limits: Limits | None = None) -> list[tuple[int, int, str]]:
    result = check(source, "l.rules", limits=limits) if limits else check(source, "l.rules")
    return [(d.line, d.column, d.code) for d in result.diagnostics]


def test_file_size():
    source = "".join(f"rule r{i}: when true then record\n" for i in range(10))  # 310 bytes
    assert codes(source, Limits(max_bytes=100)) == [(1, 1, "limit-size")]
    result = check(source, "l.rules", limits=Limits(max_bytes=100))
    assert "too large: 310 bytes (the limit is 100)" in result.diagnostics[0].message
    assert codes(source, Limits(max_bytes=310)) == []
    assert codes("# é\n" * 2, Limits(max_bytes=9)) == [(1, 1, "limit-size")]  # bytes, not characters


def test_default_size_limit_is_two_mebibytes():
    assert Limits().max_bytes == 2 * 1024 * 1024
    big = "# " + "x" * (2 * 1024 * 1024) + "\n"
    assert codes(big) == [(1, 1, "limit-size")]


def test_rule_count():
    source = "".join(f"rule r{i}: when true then record\n" for i in range(5))
    assert codes(source, Limits(max_rules=3)) == [(4, 1, "limit-rules")]
    # rules that do not start a line are counted after parsing
    inline = " ".join(f"rule r{i}: when true then record" for i in range(5))
    assert codes(inline, Limits(max_rules=3)) == [(1, 99, "limit-rules")]  # at the 4th name
    assert Limits().max_rules == 10_000


def test_token_limit():
    assert Limits().max_tokens == 80_000
    deep = "rule r: when " + "(" * 80_000 + "true" + ")" * 80_000 + " then record\n"
    assert codes(deep) == [(1, 80_010, "limit-tokens")]  # at the 80,001st token, before parsing


def test_depth_64_is_allowed_and_65_is_not():
    ok = "rule r: when " + "not " * 63 + "true then record"
    assert codes(ok) == []
    assert compile_rules(ok, "l.rules").match  # and it compiles
    too_deep = "rule r: when " + "not " * 64 + "true then record"
    assert codes(too_deep) == [(1, 14, "limit-depth")]


@pytest.mark.parametrize(
    "condition",
    [
        "(" * 35_000 + "true" + ")" * 35_000,  # 80,000 of each would pass the token limit
        "[" * 50_000,
        "not " * 50_000 + "true",
        "- " * 50_000 + "1 > 0",
        "metrics.x" + " + 1" * 30_000 + " > 0",
        "true" + " and true" * 30_000,  # long but flat: and/or chains do not nest
    ],
    ids=["parens", "brackets", "nots", "minus", "plus-chain", "and-chain"],
)
def test_deep_input_is_reported_not_crashed(condition):
    source = f"rule deep: when {condition} then record\nrule fine: when true then record\nrule bad: when model.age > 1 then record\n"
    t0 = time.perf_counter()
    result = check(source, "deep.rules")
    assert time.perf_counter() - t0 < 15
    got = [(d.line, d.code) for d in result.diagnostics]
    if condition.startswith("true and"):
        assert (1, "limit-depth") not in got
    else:
        assert (1, "limit-depth") in got
    assert (3, "type-mismatch") in got  # the other rules are still checked
    assert "fine" in [r.name for r in result.rules]
    assert all(d.code != "internal" for d in result.diagnostics)
