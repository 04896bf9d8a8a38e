"""Pass 3: type checking. Syntax trees in, typed trees (typed.py) and diagnostics out.

One pass collects every error of a file: an ill-typed operand yields a poisoned node of type
ERROR, and anything built on it stays quiet, so each mistake is reported once, where it is. The
checker is the only place that decides types; the builder (ast.py) and the back ends trust it.

Errors: unknown fields and functions (with "did you mean"), operands of mismatched types (naming
both), unknown enum values, non-boolean conditions, malformed literals, duplicate rule names,
unknown actions and arguments, two different actions of one kind, constant expressions that
overflow. Warnings: a retrain without a cooldown, an action given twice, and any part of a condition
that can never be true (`severity > critical`, `metrics.x > 5 and (metrics.x < 3 or ...)`).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass

from . import ast
from . import typed as t
from .diagnostics import Diagnostic, Span
from .facts import ActionSpec
from .formatter import expr_text
from .schema import (
    ACTION_ARGS,
    ACTIONS,
    ALERT_FIELDS,
    EQUATABLE,
    FUNCTIONS,
    KNOWN_NAMES,
    LEVELS,
    MAP_FIELDS,
    MODEL_FIELDS,
    ORDERED,
    RETRAIN_MODES,
    Type,
    parse_numeric,
)

N, S, B, D, SEV, ERR = Type.NUMBER, Type.STRING, Type.BOOL, Type.DURATION, Type.SEVERITY, Type.ERROR

# Result type of arithmetic, by (op, left, right).
# Ten years: longer is no cooldown but a typo, and it must stay far inside what a datetime can hold.
MAX_COOLDOWN_S = 3650 * 86400
_ARITH = {
    ("+", N, N): N, ("+", D, D): D,
    ("-", N, N): N, ("-", D, D): D,
    ("*", N, N): N, ("*", D, N): D, ("*", N, D): D,
    ("/", N, N): N, ("/", D, N): D, ("/", D, D): N,
}  # fmt: skip
_ARITH_WORDS = {"+": "add {} and {}", "-": "subtract {1} from {0}", "*": "multiply {} by {}", "/": "divide {} by {}"}
_FIELD_NAMES = [n for n in KNOWN_NAMES if n not in LEVELS]
_FOLD = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b}


@dataclass(frozen=True, slots=True)
class CheckedRule:
    rule: ast.Rule
    condition: t.Node | None
    actions: tuple[ActionSpec, ...]
    ok: bool  # no errors in this rule: it can be compiled


def _suggest(word: str, candidates, prefix: str = "; did you mean ") -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"{prefix}'{close[0]}'?" if close else ""


def _poison(src: ast.Expr, type_: Type = ERR) -> t.Const:
    return t.Const(None, type_, src)


class Checker:
    def __init__(self, filename: str, targets: frozenset[str] | None = None):
        """`targets`: the notification target names `notify NAME` may use; None leaves names
        unchecked (tools that check a file without the server's configuration)."""
        self.filename = filename
        self.targets = targets
        self.diagnostics: list[Diagnostic] = []
        self._errors = 0

    # --- reporting ------------------------------------------------------------------------------
    def error(self, code: str, message: str, span: Span) -> None:
        self._errors += 1
        self.diagnostics.append(Diagnostic.at("error", code, message, self.filename, span))

    def warning(self, code: str, message: str, span: Span) -> None:
        self.diagnostics.append(Diagnostic.at("warning", code, message, self.filename, span))

    # --- rules ----------------------------------------------------------------------------------
    def check_rules(self, rules: list[ast.Rule]) -> list[CheckedRule]:
        seen: dict[str, ast.Rule] = {}
        out = []
        for rule in rules:
            before = self._errors
            if rule.name in seen:
                first = seen[rule.name]
                self.error(
                    "duplicate-rule",
                    f"duplicate rule name '{rule.name}' (first defined at line {first.name_span.line})",
                    rule.name_span,
                )
            else:
                seen[rule.name] = rule
            if rule.title is not None and rule.title.error:
                self.error("bad-literal", rule.title.error, rule.title.error_span or rule.title.span)
            condition = self.condition(rule.condition) if rule.condition is not None else None
            actions = self.actions(rule)
            ok = self._errors == before and condition is not None
            out.append(CheckedRule(rule, condition, actions, ok))
        return out

    def condition(self, e: ast.Expr) -> t.Node:
        node = self.expr(e)
        if node.type not in (B, ERR):
            self.error("not-bool", f"condition must be bool, got {node.type}", e.span)
            return _poison(e)
        if node.type == B:
            self.never_true(node)
        return node

    # --- expressions ----------------------------------------------------------------------------
    def expr(self, e: ast.Expr, hint: Type | None = None) -> t.Node:
        method = getattr(self, "e_" + type(e).__name__)
        return method(e, hint)

    def e_NumLit(self, e: ast.NumLit, hint) -> t.Node:
        if e.kind == "bad":
            self.error("bad-literal", e.error or f"malformed literal '{e.text}'", e.span)
            return _poison(e)
        return t.Const(e.value, D if e.kind == "duration" else N, e)

    def e_StrLit(self, e: ast.StrLit, hint) -> t.Node:
        if e.error:
            self.error("bad-literal", e.error, e.error_span or e.span)
            return _poison(e)
        return t.Const(e.value, S, e)

    def e_BoolLit(self, e: ast.BoolLit, hint) -> t.Node:
        return t.Const(e.value, B, e)

    def e_Name(self, e: ast.Name, hint) -> t.Node:
        if e.error:
            self.error("bad-literal", e.error, e.error_span or e.span)
            return _poison(e)
        head, parts = e.parts[0], e.parts
        if head in MAP_FIELDS:
            if len(parts) == 1:
                self.error("not-a-value", f"'{head}' is a map: read one entry with {head}.NAME", e.span)
                return _poison(e)
            key = parts[1] if e.bracket else ".".join(parts[1:])
            kind = "metric" if head == "metrics" else "label"
            return t.Ref(kind, key, MAP_FIELDS[head], True, f"{head}.{key}", e)
        if head == "model":
            field = MODEL_FIELDS.get(e.dotted)
            if field is not None and not e.bracket:
                return t.Ref("model", field.attr, field.type, field.optional, field.name, e)
            if len(parts) == 1:
                self.error("not-a-value", "'model' is not a value: read a fact such as model.age", e.span)
            else:
                hint_text = _suggest(e.dotted, MODEL_FIELDS) or f" (model facts: {', '.join(MODEL_FIELDS)})"
                self.error("unknown-field", f"unknown field '{e.dotted}'{hint_text}", e.span)
            return _poison(e)
        if len(parts) == 1 and not e.bracket:
            field = ALERT_FIELDS.get(head)
            if field is not None:
                return t.Ref("alert", field.attr, field.type, field.optional, field.name, e)
            if head in LEVELS:
                return t.Const(LEVELS[head], SEV, e)
            # Beside a severity a bare word is probably an enum value, beside a string a string
            # without quotes; unless it looks like a misspelt field (`sevrity >= high`).
            field_guess = _suggest(head, _FIELD_NAMES)
            level_guess = _suggest(head, LEVELS)
            if hint == SEV and (level_guess or not field_guess):
                self.error(
                    "unknown-enum",
                    f"unknown severity '{head}'{level_guess} (low, medium, high or critical)",
                    e.span,
                )
                return _poison(e)
            if hint == S and not field_guess:
                self.error("unknown-field", f"unknown name '{head}'; write the string as \"{head}\"", e.span)
                return _poison(e)
            suggestion = field_guess or _suggest(head, KNOWN_NAMES)
            if not suggestion:
                suggestion = f" (a metric is written metrics.{head}, a label labels.{head})"
            self.error("unknown-field", f"unknown field '{head}'{suggestion}", e.span)
            return _poison(e)
        # a dotted name with an unknown head: metric.x, label.desk, models.age ...
        close = difflib.get_close_matches(head, [*MAP_FIELDS, "model"], n=1, cutoff=0.6)
        guess = f"; did you mean '{'.'.join([close[0], *parts[1:]])}'?" if close else ""
        self.error("unknown-field", f"unknown field '{e.dotted}'{guess}", e.span)
        return _poison(e)

    def e_Neg(self, e: ast.Neg, hint) -> t.Node:
        x = self.expr(e.operand)
        if x.type == ERR:
            return x
        if x.type not in (N, D):
            self.error("type-mismatch", f"cannot negate {x.type}", e.span)
            return _poison(e)
        if isinstance(x, t.Const):
            return t.Const(-x.value, x.type, e)
        return t.Negate(x, x.type, e)

    def e_BinOp(self, e: ast.BinOp, hint) -> t.Node:
        left, right = self.expr(e.left), self.expr(e.right)
        if ERR in (left.type, right.type):
            return _poison(e)
        result = _ARITH.get((e.op, left.type, right.type))
        if result is None:
            verb = _ARITH_WORDS[e.op].format(left.type, right.type)
            self.error("type-mismatch", f"cannot {verb}", e.span)
            return _poison(e)
        if e.op == "/" and isinstance(right, t.Const) and right.value == 0:
            self.error("division-by-zero", "division by zero", e.right.span)
            return _poison(e)
        if isinstance(left, t.Const) and isinstance(right, t.Const):
            try:
                value = _FOLD[e.op](left.value, right.value)
            except OverflowError:
                value = math.inf
            if not math.isfinite(value):
                self.error("overflow", f"constant expression overflows: {expr_text(e)} is out of range", e.span)
                return _poison(e)
            return t.Const(value, result, e)
        return t.Arith(e.op, left, right, result, e)

    def e_Call(self, e: ast.Call, hint) -> t.Node:
        if e.func not in FUNCTIONS:
            more = _suggest(e.func, FUNCTIONS) or f" (functions: {', '.join(FUNCTIONS)})"
            self.error("unknown-function", f"unknown function '{e.func}'{more}", e.func_span)
            for a in e.args:
                self.expr(a)
            return _poison(e)
        if e.func == "has":
            return self._has(e)
        want = "1 argument" if e.func == "abs" else "2 or more arguments"
        if (e.func == "abs") != (len(e.args) == 1) or (e.func != "abs" and len(e.args) < 2):
            self.error("bad-call", f"{e.func}() takes {want}, got {len(e.args)}", e.span)
            for a in e.args:
                self.expr(a)
            return _poison(e)
        args = [self.expr(a) for a in e.args]
        if any(a.type == ERR for a in args):
            return _poison(e)
        first = args[0].type
        for arg, src in zip(args, e.args):
            if arg.type not in (N, D):
                self.error("type-mismatch", f"{e.func}() takes numbers or durations, got {arg.type}", src.span)
                return _poison(e)
            if arg.type != first:
                self.error("type-mismatch", f"{e.func}() arguments must have one type, got {first} and {arg.type}", src.span)
                return _poison(e)
        if all(isinstance(a, t.Const) for a in args):
            fn = {"abs": abs, "min": min, "max": max}[e.func]
            return t.Const(fn(*(a.value for a in args)), first, e)
        return t.Func(e.func, tuple(args), first, e)

    def _has(self, e: ast.Call) -> t.Node:
        usage = "has() takes one metrics.NAME, labels.NAME or model fact"
        if len(e.args) != 1 or not isinstance(e.args[0], ast.Name):
            self.error("bad-call", usage, e.span)
            return _poison(e, B)
        ref = self.expr(e.args[0])
        if ref.type == ERR:
            return _poison(e, B)
        if not isinstance(ref, t.Ref) or not ref.optional:
            what = ref.path if isinstance(ref, t.Ref) else expr_text(e.args[0])
            self.error("bad-call", f"{usage}; '{what}' is never missing", e.args[0].span)
            return _poison(e, B)
        return t.Has(ref, e)

    def _bare_unknown(self, e: ast.Expr) -> bool:
        """A bare word that is neither a field nor an enum member: its meaning (enum value?
        string without quotes?) depends on the other operand, so that one is checked first."""
        return (
            isinstance(e, ast.Name)
            and len(e.parts) == 1
            and not e.bracket
            and e.parts[0] not in ALERT_FIELDS
            and e.parts[0] not in LEVELS
            and e.parts[0] != "model"
        )

    def e_Compare(self, e: ast.Compare, hint) -> t.Node:
        if self._bare_unknown(e.left) and not self._bare_unknown(e.right):
            right = self.expr(e.right)
            left = self.expr(e.left, right.type)
        else:
            left = self.expr(e.left)
            right = self.expr(e.right, left.type)
        if ERR in (left.type, right.type):
            return _poison(e, B)
        if left.type != right.type:
            self.error("type-mismatch", f"cannot compare {left.type} with {right.type}{_hint(left, right)}", e.span)
            return _poison(e, B)
        allowed = ORDERED if e.op not in ("==", "!=") else EQUATABLE
        if left.type not in allowed:
            self.error("type-mismatch", f"operator '{e.op}' does not apply to {left.type}", e.op_span)
            return _poison(e, B)
        if isinstance(left, t.Const) and isinstance(right, t.Const):
            self.warning("constant", "comparison of two constants: the rule does not depend on the alert", e.span)
        return t.Cmp(e.op, left, right, e)

    def e_InList(self, e: ast.InList, hint) -> t.Node:
        operand = self.expr(e.operand)
        values, bad = [], operand.type == ERR
        for item in e.items:
            node = self.expr(item, None if bad else operand.type)
            if node.type == ERR:
                bad = True
            elif not isinstance(node, t.Const):
                self.error("not-constant", "list items must be constants", item.span)
                bad = True
            elif not bad and node.type != operand.type:
                self.error("type-mismatch", f"cannot compare {operand.type} with {node.type}{_hint(operand, node)}", item.span)
                bad = True
            else:
                values.append(node.value)
        if bad:
            return _poison(e, B)
        if operand.type not in EQUATABLE:
            self.error("type-mismatch", f"operator 'in' does not apply to {operand.type}", e.span)
            return _poison(e, B)
        if not values and not e.negated:
            self.warning("never-true", "'in []' is never true", e.list_span)
        return t.Member(operand, tuple(dict.fromkeys(values)), e.negated, e)

    def e_Not(self, e: ast.Not, hint) -> t.Node:
        x = self.expr(e.operand)
        if x.type == ERR:
            return _poison(e, B)
        if x.type != B:
            self.error("not-bool", f"operand of 'not' must be bool, got {x.type}", e.operand.span)
            return _poison(e, B)
        return t.NotN(x, e)

    def e_BoolOp(self, e: ast.BoolOp, hint) -> t.Node:
        terms, bad = [], False
        for term in e.terms:
            x = self.expr(term)
            if x.type == ERR:
                bad = True
            elif x.type != B:
                self.error("not-bool", f"operand of '{e.op}' must be bool, got {x.type}", term.span)
                bad = True
            terms.append(x)
        return _poison(e, B) if bad else t.BoolN(e.op, tuple(terms), e)

    # --- warnings on conditions ----------------------------------------------------------------
    def never_true(self, node: t.Node) -> None:
        """Warn at each part of a condition that can never be true (and whose parts can)."""
        self._alternatives(node)

    def _alternatives(self, node: t.Node) -> list[dict] | None:
        """The ways ``node`` can be true: an `or` of conjunctions, each a dict from field path
        to the constraints on it. [] means never; None means too many ways to enumerate
        (assumed possible). Warns where a node has no way but each of its terms has one."""
        if isinstance(node, t.NotN):
            self._alternatives(node.operand)  # only for the warnings inside
            return [{}]
        if isinstance(node, t.BoolN):
            parts = [self._alternatives(term) for term in node.terms]
            if node.op == "or":
                if any(p is None for p in parts):
                    return None
                alts = [a for p in parts for a in p]
                return alts if len(alts) <= _MAX_ALTERNATIVES else None
            alts = _conjunction(parts)
            if alts == [] and all(p != [] for p in parts):
                conflict = _contradiction(node.terms)
                if conflict:
                    texts = " and ".join(expr_text(c.src) for c in conflict)
                    self.warning("never-true", f"condition can never be true: {texts}", conflict[-1].src.span)
                else:
                    self.warning("never-true", f"condition can never be true: {expr_text(node.src)}", node.src.span)
            return alts
        leaf = _constraints(node)
        if leaf is None:
            return [{}]
        if isinstance(node, t.Member) and not node.values:
            return []  # 'in []' has its own warning
        if not _possible(leaf):
            self.warning("never-true", f"condition can never be true: {expr_text(node.src)}", node.src.span)
            return []
        return [leaf]

    # --- actions --------------------------------------------------------------------------------
    def actions(self, rule: ast.Rule) -> tuple[ActionSpec, ...]:
        specs: list[ActionSpec] = []
        for action in rule.actions:
            spec = self.action(action)
            if spec is None:
                continue
            kinds = {s.kind for s in specs}
            if spec.kind == "retrain" and "retrain" in kinds:
                self.error("conflicting-actions", "a rule retrains at most once", action.span)
            elif {spec.kind} | kinds >= {"retrain", "rollback"}:
                self.error("conflicting-actions", "a rule cannot both retrain and roll back", action.span)
            elif spec in specs:
                self.warning("duplicate-action", f"'{spec.describe()}' is given twice", action.span)
                continue
            elif spec.kind in kinds and spec.kind != "notify":  # one rule may page and post to a channel
                other = next(s for s in specs if s.kind == spec.kind)
                self.error(
                    "conflicting-actions",
                    f"a rule takes each action once: '{spec.describe()}' contradicts '{other.describe()}'",
                    action.span,
                )
            specs.append(spec)
        return tuple(specs)

    def action(self, a: ast.Action) -> ActionSpec | None:
        if a.name not in ACTION_ARGS:
            more = _suggest(a.name, ACTIONS) or f" (actions: {', '.join(ACTIONS)})"
            self.error("unknown-action", f"unknown action '{a.name}'{more}", a.name_span)
            return None
        if a.name == "notify":
            return self._notify(a)
        allowed = ACTION_ARGS[a.name]
        words, i, before = a.words, 0, self._errors
        mode = None
        if a.name == "retrain":
            first = words[0] if words else None
            if first is not None and first.kind == "name" and first.text in RETRAIN_MODES:
                mode, i = first.text, 1
            elif first is not None and first.kind == "name" and first.text not in allowed:
                more = _suggest(first.text, RETRAIN_MODES)
                self.error("unknown-argument", f"unknown retrain mode '{first.text}'{more} (full or incremental)", first.span)
                i = 1
            else:
                self.error("missing-argument", "retrain needs a mode: full or incremental", a.name_span)
        priority = cooldown = None
        per_model, seen, unknown = False, set(), False
        while i < len(words):
            w = words[i]
            nxt = words[i + 1] if i + 1 < len(words) else None
            if w.kind != "name" or w.text not in allowed:
                if not allowed:
                    self.error("unknown-argument", f"'{a.name}' takes no arguments", w.span)
                else:
                    more = _suggest(w.text, allowed) or f" (arguments: {', '.join(allowed)})"
                    self.error("unknown-argument", f"unknown argument '{w.text}' for {a.name}{more}", w.span)
                    unknown = True
                i += 1
                # the word after an unknown argument is probably its value: do not report it too
                if allowed and nxt is not None and not (nxt.kind == "name" and nxt.text in allowed):
                    i += 1
                continue
            if w.text in seen:
                self.error("duplicate-argument", f"'{w.text}' given twice", w.span)
            seen.add(w.text)
            if w.text == "priority":
                if nxt is None or nxt.kind != "name" or nxt.text in allowed:
                    self.error("missing-argument", "priority needs a value: low, medium, high or critical", w.span)
                    i += 1
                    continue
                if nxt.text not in LEVELS:
                    more = _suggest(nxt.text, LEVELS)
                    self.error("unknown-enum", f"unknown priority '{nxt.text}'{more} (low, medium, high or critical)", nxt.span)
                else:
                    priority = LEVELS[nxt.text]
                i += 2
            else:  # cooldown DURATION [per model]
                if nxt is None or nxt.kind != "number":
                    self.error("missing-argument", "cooldown needs a duration, e.g. cooldown 12h", w.span)
                    i += 1
                    continue
                lit = parse_numeric(nxt.text)
                if lit.kind == "bad":
                    self.error("bad-literal", lit.error or "malformed duration", nxt.span)
                elif lit.kind != "duration":
                    self.error("type-mismatch", f"cooldown needs a duration, got number '{nxt.text}' (e.g. {nxt.text}h)", nxt.span)
                elif not 0 <= lit.value <= MAX_COOLDOWN_S:
                    # Past this, "now + cooldown" leaves the calendar and every alert of the rule fails.
                    self.error("bad-literal", f"cooldown must be between 0 and 3650d, got {nxt.text}", nxt.span)
                else:
                    cooldown = lit.value
                i += 2
                if i < len(words) and words[i].kind == "name" and words[i].text == "per":
                    if i + 1 < len(words) and words[i + 1].text == "model":
                        per_model, i = True, i + 2
                    else:
                        self.error("unknown-argument", "expected 'model' after 'per'", words[i].span)
                        after = words[i + 1] if i + 1 < len(words) else None
                        i += 2 if after is not None and after.text not in allowed else 1
        if a.name == "retrain" and priority is None and "priority" not in seen and not unknown:
            self.error("missing-argument", "retrain needs a priority: low, medium, high or critical", a.name_span)
        if a.name == "retrain" and "cooldown" not in seen:
            self.warning(
                "no-cooldown",
                "retrain without a cooldown: every matching alert asks for a retrain (add e.g. cooldown 12h)",
                a.span,
            )
        if self._errors != before:
            return None
        return ActionSpec(a.name, mode, priority, cooldown, per_model)

    def _notify(self, a: ast.Action) -> ActionSpec | None:
        """``notify TARGET``: one target name, which must be configured when the names are known.
        A bare ``notify`` still compiles (it only records the decision) but is warned about."""
        if not a.words:
            self.warning("no-target", "notify without a target only records the decision; name a configured "
                         "target, e.g. notify slack_quants", a.span)
            return ActionSpec("notify")
        name, extra = a.words[0], a.words[1:]
        if name.kind != "name":
            self.error("bad-target", f"notify needs a target name, not {name.text}", name.span)
            return None
        if extra:
            self.error("unknown-argument", "notify takes one target name", extra[0].span)
            return None
        if self.targets is not None and name.text not in self.targets:
            if self.targets:
                more = _suggest(name.text, sorted(self.targets)) or f" (targets: {', '.join(sorted(self.targets))})"
            else:
                more = " (no notification targets are configured: add [notify.targets.NAME] to the --config file)"
            self.error("unknown-target", f"unknown notification target '{name.text}'{more}", name.span)
            return None
        return ActionSpec("notify", target=name.text)


def _hint(left: t.Node, right: t.Node) -> str:
    types = {left.type, right.type}
    if types == {D, N}:
        return " (durations carry a unit, e.g. 30d or 12h)"
    if types == {SEV, S}:
        return " (severities are written without quotes, e.g. severity >= high)"
    return ""


# How many alternatives the never-true lint follows through and/or, and how many constraints it
# copies for one `and`, before it stops looking (and assumes the condition can be true).
_MAX_ALTERNATIVES = 64
_MAX_WORK = 100_000
# Values a field never takes: severities are low (1) to critical (4); ages are never negative.
_DOMAIN: dict[str, list[tuple[str, object]]] = {
    "severity": [(">=", 1), ("<=", 4)],
    "age": [(">=", 0.0)],
    "model.age": [(">=", 0.0)],
}


def _constraints(node: t.Node) -> dict | None:
    """``{path: [(op, value), ...]}`` for a comparison of a field with constants; else None."""
    if isinstance(node, t.Cmp):
        got = t.ref_vs_const(node)
        return {got[0].path: [(got[1], got[2])]} if got else None
    if isinstance(node, t.Member) and isinstance(node.operand, t.Ref):
        if node.negated:
            return {node.operand.path: [("!=", v) for v in node.values]}
        return {node.operand.path: [("in", node.values)]}
    return None


def _possible(conjunction: dict) -> bool:
    return all(_satisfiable(cs + _DOMAIN.get(path, [])) for path, cs in conjunction.items())


def _conjunction(parts: list[list[dict] | None]) -> list[dict] | None:
    """The alternatives of an `and` of terms with alternatives ``parts`` (their product)."""
    acc: list[dict] = [{}]
    work = 0
    for alts in (p for p in parts if p is not None):
        if len(acc) == 1 and len(alts) == 1:  # the common case, kept linear in the terms
            for path, cs in alts[0].items():
                acc[0].setdefault(path, []).extend(cs)
            continue
        work += sum(len(cs) for a in acc for cs in a.values()) * len(alts)
        if work > _MAX_WORK:
            return None
        acc = [{**a, **{p: a.get(p, []) + cs for p, cs in b.items()}} for a in acc for b in alts]
        acc = [a for a in acc if _possible(a)]
        if len(acc) > _MAX_ALTERNATIVES:
            return None
    # Terms too complex to follow (None) are left out: that can only make more alternatives look
    # possible, never fewer, so a warning is still right.
    return [a for a in acc if _possible(a)]


def _contradiction(terms) -> list[t.Cmp | t.Member] | None:
    """Clauses of one conjunction that cannot all hold: bounds, equalities and `in` lists on the
    same field. Only fields against constants are considered; anything else may be true."""
    by_path: dict[str, list] = {}
    for term in terms:
        got = _constraints(term)
        if got:
            ((path, cs),) = got.items()
            by_path.setdefault(path, []).append((term, cs))
    for path, clauses in by_path.items():
        constraints = [c for _, cs in clauses for c in cs] + _DOMAIN.get(path, [])
        if len(clauses) > 1 and not _satisfiable(constraints):
            return [c for c, _ in clauses]
    return None


def _satisfiable(constraints: list[tuple[str, object]]) -> bool:
    lo, lo_strict, hi, hi_strict = -math.inf, False, math.inf, False
    allowed: set | None = None
    excluded = set()
    for op, v in constraints:
        if op == "==":
            allowed = {v} if allowed is None else allowed & {v}
        elif op == "in":
            allowed = set(v) if allowed is None else allowed & set(v)
        elif op == "!=":
            excluded.add(v)
        elif op in (">", ">="):
            if v > lo or (v == lo and op == ">"):
                lo, lo_strict = v, op == ">"
        elif op in ("<", "<="):
            if v < hi or (v == hi and op == "<"):
                hi, hi_strict = v, op == "<"

    def in_bounds(x) -> bool:
        if isinstance(x, str):
            return True
        return (x > lo or (x == lo and not lo_strict)) and (x < hi or (x == hi and not hi_strict))

    if allowed is not None:
        return any(in_bounds(x) and x not in excluded for x in allowed)
    if lo > hi or (lo == hi and (lo_strict or hi_strict)):
        return False
    return True
