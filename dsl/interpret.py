"""The reference semantics of conditions: a direct interpreter over the typed tree.

Conditions use three-valued (Kleene) logic. A value read from a metric, label or model fact the
alert or registry lacks is *missing*, and so is arithmetic over it and a division by zero; a
comparison with a missing operand is missing; ``not missing`` is missing; ``and`` is false as soon
as one term is false and true only when all are; ``or`` is true as soon as one term is true and
false only when all are. A rule matches only when its condition is *true*, so a missing metric
never makes a rule fire, not even under ``not`` (``not metrics.x > 5`` does not match an alert
without metrics.x), and ``metrics.a > 1 or metrics.b > 1`` still matches an alert that has only b.

``explain`` uses this interpreter (it wants the value of each clause); the hot path uses the
generated code of compiler.py, which tests/dsl hold equal to this on generated alerts.
"""

from __future__ import annotations

import operator

from . import typed as t
from .facts import UNREGISTERED, AlertFacts, ModelFacts

_CMP = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_ARITH = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}


def read(ref: t.Ref, alert: AlertFacts, model) -> object:
    if ref.kind == "alert":
        return getattr(alert, ref.key)
    if ref.kind == "metric":
        return alert.metrics.get(ref.key)
    if ref.kind == "label":
        return alert.labels.get(ref.key)
    return getattr(model, ref.key)


def value(node: t.Node, alert: AlertFacts, model) -> object:
    """The value of an expression, or None when it is missing."""
    if isinstance(node, t.Const):
        return node.value
    if isinstance(node, t.Ref):
        return read(node, alert, model)
    if isinstance(node, t.Arith):
        left = value(node.left, alert, model)
        if left is None:
            return None
        right = value(node.right, alert, model)
        if right is None or (node.op == "/" and right == 0):
            return None
        return _ARITH[node.op](left, right)
    if isinstance(node, t.Negate):
        x = value(node.operand, alert, model)
        return None if x is None else -x
    if isinstance(node, t.Func):
        args = [value(a, alert, model) for a in node.args]
        if any(a is None for a in args):
            return None
        return {"abs": abs, "min": min, "max": max}[node.name](*args)
    return truth(node, alert, model)


def truth(node: t.Node, alert: AlertFacts, model) -> bool | None:
    """True, False, or None (missing) for a boolean expression."""
    if isinstance(node, t.BoolN):
        result: bool | None = node.op == "and"
        for term in node.terms:
            v = truth(term, alert, model)
            if v is None:
                result = None
            elif v is not (node.op == "and"):
                return v  # false decides an `and`, true decides an `or`
        return result
    if isinstance(node, t.NotN):
        v = truth(node.operand, alert, model)
        return None if v is None else not v
    if isinstance(node, t.Cmp):
        left = value(node.left, alert, model)
        right = value(node.right, alert, model) if left is not None else None
        if left is None or right is None:
            return None
        return _CMP[node.op](left, right)
    if isinstance(node, t.Member):
        x = value(node.operand, alert, model)
        if x is None:
            return None
        return (x in node.values) != node.negated
    if isinstance(node, t.Has):
        return read(node.ref, alert, model) is not None
    if isinstance(node, (t.Const, t.Ref)):
        v = value(node, alert, model)
        return None if v is None else bool(v)
    raise TypeError(f"not a boolean node: {node!r}")


def evaluate(condition: t.Node, alert: AlertFacts, model: ModelFacts | None) -> bool | None:
    return truth(condition, alert, UNREGISTERED if model is None else model)
