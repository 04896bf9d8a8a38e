"""Hypothesis strategies: well-typed random conditions (as text) and random alerts.

A condition can still be rejected (a divisor that folds to the constant 0, e.g. `(10% - 10%)`):
tests skip those with `assume(check(...).ok)`."""

from __future__ import annotations

from hypothesis import strategies as st

from closedloop.dsl import AlertFacts, ModelFacts

METRICS = ["a", "b", "c"]
LABELS = ["desk", "venue"]
TYPES = ["drift", "risk", "age"]
DAY = 86400.0


def _paren(s: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Sometimes wrap in redundant parentheses (fmt must remove or keep them without changing
    the meaning)."""
    return st.one_of(s, s.map(lambda x: f"({x})"))


numbers = st.one_of(
    st.sampled_from([f"metrics.{m}" for m in METRICS]),
    st.sampled_from(["0", "1", "0.5", "2.25", "10%", "150%", "1e-1", "model.version"]),
)
durations = st.sampled_from(["age", "model.age", "model.last_retrained", "1h", "30d", "1h30m", "2w", "90s"])


def _arith(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(children, st.sampled_from(["+", "-", "*", "/"]), children)
        .filter(lambda t: not (t[1] == "/" and t[2] == "0"))
        .map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        children.map(lambda x: f"-{x}"),
        children.map(lambda x: f"abs({x})"),
        st.tuples(st.sampled_from(["min", "max"]), children, children).map(lambda t: f"{t[0]}({t[1]}, {t[2]})"),
    )


num_expr = st.recursive(numbers, _arith, max_leaves=4)
dur_expr = st.recursive(
    durations,
    lambda c: st.one_of(
        st.tuples(c, st.sampled_from(["+", "-"]), c).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
        st.tuples(c, st.sampled_from(["*", "/"]), numbers)
        .filter(lambda t: not (t[1] == "/" and t[2] == "0"))
        .map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
    ),
    max_leaves=3,
)
ops = st.sampled_from(["==", "!=", "<", "<=", ">", ">="])
atoms = st.one_of(
    st.tuples(num_expr, ops, num_expr).map(" ".join),
    st.tuples(dur_expr, ops, dur_expr).map(" ".join),
    st.tuples(st.just("severity"), ops, st.sampled_from(["low", "medium", "high", "critical"])).map(" ".join),
    st.sampled_from(TYPES).map(lambda t: f'type == "{t}"'),
    st.sampled_from(LABELS).map(lambda l: f'labels.{l} == "x"'),
    st.sampled_from(LABELS).map(lambda l: f'labels.{l} in ["x", "y"]'),
    st.sampled_from([f"has(metrics.{m})" for m in METRICS] + ["has(labels.desk)", "has(model.age)"]),
    st.sampled_from(["model.enabled", "model.registered", "true", "false", 'model_id not in ["m1"]']),
)
conditions = st.recursive(
    _paren(atoms),
    lambda c: st.one_of(
        _paren(st.tuples(c, st.sampled_from(["and", "or"]), c).map(" ".join)),
        c.map(lambda x: f"not ({x})"),
        c.map(lambda x: f"not {x}" if x.startswith("(") else f"not ({x})"),
    ),
    max_leaves=6,
)

_metric_values = st.one_of(st.sampled_from([0.0, 0.5, 1.0, 2.25, -1.0, 0.1]), st.floats(-3, 3, allow_nan=False))
alerts = st.builds(
    AlertFacts,
    type=st.sampled_from(TYPES),
    model_id=st.sampled_from(["m1", "m2"]),
    severity=st.integers(1, 4),
    metrics=st.dictionaries(st.sampled_from(METRICS), _metric_values, max_size=3),
    labels=st.dictionaries(st.sampled_from(LABELS), st.sampled_from(["x", "y", "z"]), max_size=2),
    source=st.just("s"),
    age_seconds=st.sampled_from([0.0, 60.0, 3600.0, 5400.0, 40 * DAY]),
)
_durations_or_none = st.one_of(st.none(), st.sampled_from([0.0, 3600.0, DAY, 30 * DAY, 40 * DAY]))
models = st.one_of(
    st.none(),
    st.builds(
        ModelFacts,
        registered=st.just(True),
        enabled=st.booleans(),
        version=st.integers(0, 3),
        age_seconds=_durations_or_none,
        last_retrained_seconds=_durations_or_none,
    ),
)
