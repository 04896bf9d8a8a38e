"""The cost of the worst legal rule files: what one ValidateRules/ApplyRules or `rules check` can
be made to spend within the limits (dsl.Limits, the defaults).

    python bench/dsl_limits.py                      # prints a table; the last line is RESULT ...
    python bench/dsl_limits.py --max-tokens 100000  # the same under a lower token limit

Each shape is built just inside the limits: as many realistic rules as fit (10,000 under the
default limits); as many rules with a type error each; as many good rules and one broken one;
files full of maximal ``in [...]`` lists, of flat ``and`` chains, and of one title filling the
size limit. For each: seconds to ``check`` it
(best of two), the peak of Python allocations during the check (tracemalloc, a separate run:
tracing slows the code), and seconds to ``format_source`` it. The target is under 2 s and 200 MB
for every shape; figures come from this (shared, 2-core) machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import tracemalloc

from closedloop.dsl import DEFAULT_LIMITS, check, check_limits, format_source

L = DEFAULT_LIMITS  # replaced by main() when --max-tokens is given
TOKENS_PER_RULE = 26  # of RULE below
RULE = (
    'rule r{i} "Drift detection auto-retraining for model {i}":\n'
    '    when type == "drift" and metrics.drift_score > 0.25 and severity >= medium\n'
    "    then retrain full priority high cooldown 24h\n"
)


def _rules() -> int:
    return min(L.max_rules, (L.max_tokens - 50) // TOKENS_PER_RULE)


def realistic(n: int | None = None) -> str:
    return "".join(RULE.format(i=i) for i in range(n or _rules()))


def type_errors() -> str:
    return "".join(f"rule r{i}: when model.age > 30 then record\n" for i in range(min(L.max_rules, L.max_tokens // 12)))


def one_broken() -> str:
    n = _rules()
    rules = [RULE.format(i=i) for i in range(n - 1)]
    rules.insert(n // 2, "rule broken: when metrics.x > then record\n")
    return "".join(rules)


def _fill(make_rule, per_rule_tokens: int) -> str:
    count = (L.max_tokens - 10) // per_rule_tokens
    return "".join(make_rule(i) for i in range(count))


def lists() -> str:
    items = ", ".join("1" for _ in range(L.max_list))
    return _fill(lambda i: f"rule r{i}: when metrics.x in [{items}] then record\n", 2 * L.max_list + 12)


def and_chain() -> str:
    terms = " and ".join(f"metrics.m{k} > {k}" for k in range(1000))
    return _fill(lambda i: f"rule r{i}: when {terms} then record\n", 6 * 1000 + 8)


def big_title() -> str:
    return 'rule r "' + "a" * (L.max_bytes - 64) + '": when true then record\n'


SHAPES = {
    "max realistic rules": realistic,
    "max type errors": type_errors,
    "max good + 1 broken": one_broken,
    "max lists": lists,
    "max and-chains": and_chain,
    "2 MiB title": big_title,
}


def measure(source: str) -> tuple[float, float, float, int]:
    assert not check_limits(source, limits=L), check_limits(source, limits=L)[0]
    best = min(_timed(lambda: check(source, "bench.rules", limits=L)) for _ in range(2))
    tracemalloc.start()
    result = check(source, "bench.rules", limits=L)
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    fmt = _timed(lambda: _format(source))
    return best, peak, fmt, len(result.diagnostics)


def _format(source: str) -> None:
    try:
        format_source(source, "bench.rules", L)
    except Exception:  # a shape with syntax errors does not format: the time is the refusal
        pass


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    global L
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-tokens", type=int, default=DEFAULT_LIMITS.max_tokens)
    L = dataclasses.replace(DEFAULT_LIMITS, max_tokens=ap.parse_args().max_tokens)
    print(f"limits: {L}")
    print(f"{'shape':24} {'bytes':>9} {'check s':>8} {'peak MB':>8} {'fmt s':>7} {'diags':>6}")
    worst_s = worst_mb = 0.0
    for name, make in SHAPES.items():
        source = make()
        secs, mb, fmt, diags = measure(source)
        worst_s, worst_mb = max(worst_s, secs, fmt), max(worst_mb, mb)
        print(f"{name:24} {len(source.encode()):>9} {secs:>8.2f} {mb:>8.0f} {fmt:>7.2f} {diags:>6}", flush=True)
    print(f"RESULT worst_check_or_fmt_s={worst_s:.2f} worst_peak_mb={worst_mb:.0f} targets=2s,200MB")


if __name__ == "__main__":
    main()
