"""Pass 4: typed conditions -> Python predicates ``pred(alert, model) -> bool``.

Code generation, because a generated ``return a.type == _k0 and ...`` runs as fast as a
hand-written lambda, where closures pay one call per node. Safety rule: no text from a rule file
reaches ``compile``. Every literal, metric name and label name is bound as a constant in the
namespace (``_k3``) and the source holds only identifiers this module makes up (``_r0``, ``_v2``,
``_k3``) and attribute names taken from schema.py. The namespace has no builtins.

Three-valued logic (see interpret.py) without three-valued values: each boolean node is compiled
twice over, as "is definitely true" (T) and "is definitely false" (F):

    T(a and b) = T(a) and T(b)        F(a and b) = F(a) or F(b)
    T(a or b)  = T(a) or T(b)         F(a or b)  = F(a) and F(b)
    T(not a)   = F(a)                 F(not a)   = T(a)
    T(x > y)   = present(x, y) and x > y          F(x > y) = present(x, y) and not x > y

A rule matches when T(condition). "present" is a chain of walrus bindings tested against None
(``(_v1 := a.metrics.get(_k1)) is not None``) plus a non-zero test for every divisor, so a missing
value or a division by zero makes the comparison neither true nor false, with no exception and no
try block. Python's own short-circuit gives the left-to-right evaluation order.

If Python refuses the generated source (it should not: depth is limited), the rule falls back to
the interpreter, which has the same semantics.
"""

from __future__ import annotations

from typing import Callable

from . import typed as t
from .facts import UNREGISTERED
from .interpret import evaluate

Predicate = Callable[..., bool]


class _Constants:
    """Names for the values a rule mentions; one name per distinct (type, value)."""

    def __init__(self) -> None:
        self.names: dict[tuple[type, object], str] = {}
        self.namespace: dict[str, object] = {"__builtins__": {}, "_abs": abs, "_min": min, "_max": max, "_nm": UNREGISTERED}

    def name(self, value: object) -> str:
        key = (type(value), value)
        name = self.names.get(key)
        if name is None:
            name = self.names[key] = f"_k{len(self.names)}"
            self.namespace[name] = value
        return name


class _RuleCode:
    """Generates the body of one rule's function."""

    def __init__(self, consts: _Constants):
        self.consts = consts
        self.n = 0
        self.uses_model = False

    def _var(self) -> str:
        self.n += 1
        return f"_v{self.n}"

    # values ------------------------------------------------------------------------------------
    def value(self, node: t.Node, guards: list[str], seen: dict) -> str:
        if isinstance(node, t.Const):
            return self.consts.name(node.value)
        if isinstance(node, t.Ref):
            return self.ref(node, guards, seen)
        if isinstance(node, t.Arith):
            left = self.value(node.left, guards, seen)
            right = self.value(node.right, guards, seen)
            if node.op == "/" and not isinstance(node.right, t.Const):  # constants are non-zero
                d = self._var()
                guards.append(f"({d} := {right}) != 0")
                right = d
            return f"({left} {node.op} {right})"
        if isinstance(node, t.Negate):
            return f"(-{self.value(node.operand, guards, seen)})"
        if isinstance(node, t.Func):
            args = ", ".join(self.value(a, guards, seen) for a in node.args)
            return f"_{node.name}({args})"
        raise TypeError(f"not a value node: {node!r}")

    def ref(self, node: t.Ref, guards: list[str], seen: dict) -> str:
        if node.kind == "alert":
            return f"a.{node.key}"  # attribute names come from schema.py, not from the rule
        if node.kind == "model":
            self.uses_model = True
            read = f"m.{node.key}"
        else:
            read = f"a.{node.kind}s.get({self.consts.name(node.key)})"
        if not node.optional:
            return read
        key = (node.kind, node.key)
        var = seen.get(key)
        if var is None:
            var = seen[key] = self._var()
            guards.append(f"({var} := {read}) is not None")
        return var

    # booleans ----------------------------------------------------------------------------------
    def test(self, node: t.Node, want: bool) -> tuple[str, str]:
        """(code, shape): code is true iff ``node`` is definitely ``want``; shape says whether the
        code is an "or" chain (needs parentheses inside an "and") or an "and" chain/atom."""
        if isinstance(node, t.BoolN):
            # T(and)/F(or) join with "and"; T(or)/F(and) join with "or".
            joiner = "and" if (node.op == "and") == want else "or"
            parts = []
            for term in node.terms:
                code, shape = self.test(term, want)
                parts.append(f"({code})" if joiner == "and" and shape == "or" else code)
            return f" {joiner} ".join(parts), joiner
        if isinstance(node, t.NotN):
            return self.test(node.operand, not want)
        if isinstance(node, t.Const):
            return ("True" if bool(node.value) == want else "False"), "and"
        if isinstance(node, t.Has):
            ref = node.ref
            if ref.kind == "model":
                self.uses_model = True
                op = "is not" if want else "is"
                return f"m.{ref.key} {op} None", "and"
            op = "in" if want else "not in"
            return f"{self.consts.name(ref.key)} {op} a.{ref.kind}s", "and"
        guards: list[str] = []
        seen: dict = {}
        if isinstance(node, t.Cmp):
            left = self.value(node.left, guards, seen)
            right = self.value(node.right, guards, seen)
            check = f"{left} {node.op} {right}"
        elif isinstance(node, t.Member):
            x = self.value(node.operand, guards, seen)
            check = f"{x} {'not in' if node.negated else 'in'} {self.consts.name(frozenset(node.values))}"
        elif isinstance(node, t.Ref):  # a bool fact, e.g. model.enabled
            check = self.value(node, guards, seen)
        else:
            raise TypeError(f"not a boolean node: {node!r}")
        if not want:
            check = f"not ({check})"
        return " and ".join(guards + [check]), "and"


def _source_of(index: int, condition: t.Node, consts: _Constants) -> str:
    gen = _RuleCode(consts)
    body, _ = gen.test(condition, True)
    lines = [f"def _r{index}(a, m):"]
    if gen.uses_model:
        lines.append("    if m is None: m = _nm")
    lines.append(f"    return {body}")
    return "\n".join(lines)


def _interpreted(condition: t.Node) -> Predicate:
    def predicate(alert, model) -> bool:
        return evaluate(condition, alert, model) is True

    return predicate


def compile_conditions(conditions: list[t.Node], label: str = "<rules>") -> list[Predicate]:
    """One predicate per condition, in order."""
    consts = _Constants()
    sources = [_source_of(i, c, consts) for i, c in enumerate(conditions)]
    namespace = consts.namespace
    try:
        exec(compile("\n".join(sources), label, "exec"), namespace)  # noqa: S102 - see module doc
    except (SyntaxError, RecursionError, MemoryError, ValueError):
        for i, source in enumerate(sources):
            try:
                exec(compile(source, label, "exec"), namespace)  # noqa: S102
            except (SyntaxError, RecursionError, MemoryError, ValueError):
                namespace[f"_r{i}"] = _interpreted(conditions[i])
    return [namespace[f"_r{i}"] for i in range(len(conditions))]


def generated_source(condition: t.Node) -> tuple[str, dict[str, object]]:
    """The source and constants generated for one condition (for tests and curious readers)."""
    consts = _Constants()
    source = _source_of(0, condition, consts)
    return source, {k: v for k, v in consts.namespace.items() if k.startswith("_k")}
