"""The checked, typed form of a condition: what checker.py produces and compiler.py and
interpret.py consume.

Every name is resolved (a field of the alert, a metric, a label, a model fact, or an enum
constant), every node has its type, constants are folded, and ``src`` points back at the syntax
node for spans and canonical text. Nothing in this tree can be ill-typed, so the back ends need
no checks of their own beyond "missing".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from . import ast
from .schema import Type


@dataclass(frozen=True, slots=True)
class Const:
    value: object  # float | str | bool | int (severity); None only for a poisoned node
    type: Type
    src: ast.Expr


@dataclass(frozen=True, slots=True)
class Ref:
    """A value read from the alert or the model.

    kind: "alert" (attribute of AlertFacts), "model" (attribute of ModelFacts), "metric" or
    "label" (key of the map). ``optional``: may be missing at run time.
    """

    kind: str
    key: str
    type: Type
    optional: bool
    path: str  # as a rule writes it: "metrics.drift_score", "model.age", "severity"
    src: ast.Expr


@dataclass(frozen=True, slots=True)
class Arith:
    op: str  # + - * /
    left: "Node"
    right: "Node"
    type: Type
    src: ast.Expr


@dataclass(frozen=True, slots=True)
class Negate:
    operand: "Node"
    type: Type
    src: ast.Expr


@dataclass(frozen=True, slots=True)
class Func:
    name: str  # abs | min | max
    args: tuple["Node", ...]
    type: Type
    src: ast.Expr


@dataclass(frozen=True, slots=True)
class Has:
    ref: Ref
    src: ast.Expr
    type: Type = Type.BOOL


@dataclass(frozen=True, slots=True)
class Cmp:
    op: str
    left: "Node"
    right: "Node"
    src: ast.Expr
    type: Type = Type.BOOL


@dataclass(frozen=True, slots=True)
class Member:
    operand: "Node"
    values: tuple  # constants of the operand's type
    negated: bool
    src: ast.Expr
    type: Type = Type.BOOL


@dataclass(frozen=True, slots=True)
class BoolN:
    op: str  # "and" | "or"
    terms: tuple["Node", ...]
    src: ast.Expr
    type: Type = Type.BOOL


@dataclass(frozen=True, slots=True)
class NotN:
    operand: "Node"
    src: ast.Expr
    type: Type = Type.BOOL


Node = Union[Const, Ref, Arith, Negate, Func, Has, Cmp, Member, BoolN, NotN]

# Comparison with the operands swapped: `0.25 < x` is `x > 0.25`.
FLIPPED = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


def ref_vs_const(node: Cmp) -> tuple[Ref, str, object] | None:
    """``(ref, op, value)`` for a comparison between a field and a constant, field first."""
    left, right = node.left, node.right
    if isinstance(left, Ref) and isinstance(right, Const):
        return left, node.op, right.value
    if isinstance(right, Ref) and isinstance(left, Const):
        return right, FLIPPED[node.op], left.value
    return None


def walk(node: Node):
    """Every node of a condition, parents before children (depth is bounded by the limits)."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        if isinstance(n, (Arith, Cmp)):
            stack += (n.right, n.left)
        elif isinstance(n, (Negate, NotN)):
            stack.append(n.operand)
        elif isinstance(n, Member):
            stack.append(n.operand)
        elif isinstance(n, (Func, BoolN)):
            stack.extend(reversed(n.args if isinstance(n, Func) else n.terms))
        elif isinstance(n, Has):
            stack.append(n.ref)
