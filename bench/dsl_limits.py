"""The cost of the worst legal rule files: what one ValidateRules/ApplyRules or `rules check` can
be made to spend within the limits (dsl.Limits, the defaults).

    python bench/dsl_limits.py            # prints a table; the last line is RESULT ...

Each shape is built just inside the limits: 10,000 realistic rules; 10,000 rules with a type
error each; 9,999 good rules and one broken one; files full of maximal ``in [...]`` lists, of a
flat ``and`` chain, and of one title filling the size limit. For each: seconds to ``check`` it
(best of two), the peak of Python allocations during the check (tracemalloc, a separate run:
tracing slows the code), and seconds to ``format_source`` it. The target is under 2 s and 200 MB
for every shape; figures come from this (shared, 2-core) machine.
"""

from __future__ import annotations

import time
import tracemalloc

from closedloop.dsl import DEFAULT_LIMITS, check, check_limits, format_source

L = DEFAULT_LIMITS
RULE = (
    'rule r{i} "Drift detection auto-retraining for model {i}":\n'
    '    when type == "drift" and metrics.drift_score > 0.25 and severity >= medium\n'
    "    then retrain full priority high cooldown 24h\n"
)


def realistic(n: int = L.max_rules) -> str:
    return "".join(RULE.format(i=i) for i in range(n))


def type_errors(n: int = L.max_rules) -> str:
    return "".join(f"rule r{i}: when model.age > 30 then record\n" for i in range(n))


def one_broken(n: int = L.max_rules) -> str:
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
    "10k realistic rules": realistic,
    "10k type errors": type_errors,
    "9,999 good + 1 broken": one_broken,
    "max lists": lists,
    "max and-chains": and_chain,
    "2 MiB title": big_title,
}


def measure(source: str) -> tuple[float, float, float, int]:
    assert not check_limits(source), check_limits(source)[0]
    best = min(_timed(lambda: check(source, "bench.rules")) for _ in range(2))
    tracemalloc.start()
    result = check(source, "bench.rules")
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    fmt = _timed(lambda: _format(source))
    return best, peak, fmt, len(result.diagnostics)


def _format(source: str) -> None:
    try:
        format_source(source, "bench.rules")
    except Exception:  # a shape with syntax errors does not format: the time is the refusal
        pass


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
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
