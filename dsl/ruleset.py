"""The pipeline (parse -> check -> compile) and the compiled rule set the server evaluates.

``CompiledRuleSet.match`` is the hot path. Rules are indexed by what they require of an alert:
its type (``type == "drift"``, ``type in [...]``) and its model (``model_id == "m1"``,
``model_id in [...]``), read off the top-level conjunction of the condition. For each
(type, model_id) pair seen, the rules that can match are merged once, in file order, into a
cached plan, so with 10,000 rules mostly for other types and models an alert runs only the few
predicates that can match it, plus one dict lookup.
"""

from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass, field

from . import typed as t
from .checker import Checker, CheckedRule
from .compiler import Predicate, compile_conditions
from .diagnostics import Diagnostic, RuleCompileError, Span, sort_key
from .facts import AlertFacts, ModelFacts, RuleExplanation, RuleInfo, RuleMatch, Threshold
from .formatter import expr_text
from .interpret import evaluate
from .collector import gc_paused
from .parser import DEFAULT_LIMITS, Limits, parse_source


@dataclass(slots=True)
class CheckResult:
    diagnostics: list[Diagnostic] = field(default_factory=list)
    rules: list[RuleInfo] = field(default_factory=list)  # the rules without errors
    defined: list[tuple[str, Span]] = field(default_factory=list)  # every rule's name, where it stands

    @property
    def ok(self) -> bool:
        return not any(d.is_error for d in self.diagnostics)


def _selector(node: t.Node, path: str) -> frozenset | None:
    """The values a condition requires of ``path`` (a string field), or None for "any".

    ``path == "x"`` and ``path in [...]`` select; an ``and`` selects the intersection of what
    its terms select; an ``or`` the union, when every branch selects. Nothing else narrows.
    """
    if isinstance(node, t.Cmp) and node.op == "==":
        got = t.ref_vs_const(node)
        if got and got[0].kind == "alert" and got[0].path == path:
            return frozenset([got[2]])
    elif isinstance(node, t.Member) and not node.negated:
        if isinstance(node.operand, t.Ref) and node.operand.kind == "alert" and node.operand.path == path:
            return frozenset(node.values)
    elif isinstance(node, t.BoolN):
        parts = [_selector(term, path) for term in node.terms]
        if node.op == "and":
            narrowing = [p for p in parts if p is not None]
            return frozenset.intersection(*narrowing) if narrowing else None
        if all(p is not None for p in parts):
            return frozenset().union(*parts)
    return None


def _clauses(node: t.Node) -> list[t.Node]:
    """What explain reports on: the terms of a top-level and/or, else the condition itself."""
    return list(node.terms) if isinstance(node, t.BoolN) else [node]


def _reads_model(node: t.Node) -> bool:
    """Whether a condition reads a model fact (``model.x`` or ``has(model.x)``)."""
    return any(isinstance(n, t.Ref) and n.kind == "model" for n in t.walk(node))


@dataclass(frozen=True, slots=True)
class _Compiled:
    info: RuleInfo
    checked: CheckedRule
    predicate: Predicate
    match: RuleMatch
    types: frozenset | None
    models: frozenset | None
    reads_model: bool


@dataclass(frozen=True, slots=True)
class Plan:
    """What ``match`` runs for one (alert type, model_id): the rules the index leaves, in file
    order, as (predicate, match) pairs. ``reads_model``: whether any of them reads a model fact;
    when none does, any ModelFacts (or None) gives the same matches, so a caller that builds
    facts for many alerts (a backtest) can skip building them."""

    rules: tuple[tuple[Predicate, RuleMatch], ...]
    reads_model: bool


def check_parsed(source: str, filename: str, limits: Limits,
                 targets: frozenset[str] | None = None) -> tuple[list[CheckedRule], list[Diagnostic]]:
    with gc_paused():
        parsed = parse_source(source, filename, limits)
        checker = Checker(filename, targets)
        checked = checker.check_rules(parsed.rules)
    diagnostics = sorted(parsed.diagnostics + checker.diagnostics, key=sort_key)
    return checked, diagnostics


def _frozen(targets) -> frozenset[str] | None:
    return None if targets is None else frozenset(targets)


def _info(c: CheckedRule) -> RuleInfo:
    rule = c.rule
    assert c.condition is not None and rule.condition is not None
    types = _selector(c.condition, "type")
    models = _selector(c.condition, "model_id")
    return RuleInfo(
        name=rule.name,
        title=rule.title.value if rule.title is not None else "",
        condition=expr_text(rule.condition),
        actions=c.actions,
        alert_types=tuple(sorted(types)) if types is not None else None,
        line=rule.span.line,
        model_ids=tuple(sorted(models)) if models is not None else None,
    )


def check(source: str, filename: str = "<rules>", *, limits: Limits = DEFAULT_LIMITS,
          targets: frozenset[str] | None = None) -> CheckResult:
    """Diagnostics and the error-free rules of a rule file. Never raises on any input: a failure
    of the checker itself is reported as an ``internal`` error diagnostic. `targets`: the
    notification target names ``notify`` may use (None: any name)."""
    if not isinstance(source, str):
        message = f"rule source must be text, not {type(source).__name__}"
        return CheckResult([Diagnostic.at("error", "bad-input", message, filename, Span.point(1, 1))], [])
    try:
        checked, diagnostics = check_parsed(source, filename, limits, _frozen(targets))
        defined = [(c.rule.name, c.rule.name_span) for c in checked]
        return CheckResult(diagnostics, [_info(c) for c in checked if c.ok], defined)
    except Exception as exc:  # the contract is "never raises"; the fuzz tests look for these
        message = f"internal error while checking: {type(exc).__name__}: {exc}"
        return CheckResult([Diagnostic.at("error", "internal", message, filename, Span.point(1, 1))], [])


def compile_rules(source: str, filename: str = "<rules>", *, limits: Limits = DEFAULT_LIMITS,
                  targets: frozenset[str] | None = None) -> "CompiledRuleSet":
    """Compile a rule file. Raises RuleCompileError (with every diagnostic) on any error.
    `targets`: the notification target names ``notify`` may use (None: any name)."""
    checked, diagnostics = check_parsed(source, filename, limits, _frozen(targets))
    if any(d.is_error for d in diagnostics):
        raise RuleCompileError(diagnostics, source)
    return CompiledRuleSet(source, filename, checked, diagnostics)


class CompiledRuleSet:
    """An immutable, compiled rule file. Safe to share between threads."""

    _PLAN_CACHE = 65_536  # (type, model_id) plans kept; all dropped past this (rebuilt on demand)

    def __init__(self, source: str, filename: str, checked: list[CheckedRule], diagnostics: list[Diagnostic]):
        self.source = source
        self.filename = filename
        self.sha256 = hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()
        self.diagnostics = tuple(diagnostics)  # warnings only: errors do not compile
        predicates = compile_conditions([c.condition for c in checked], f"<rules {filename}>")
        compiled = []
        for c, predicate in zip(checked, predicates):
            info = _info(c)
            types = frozenset(info.alert_types) if info.alert_types is not None else None
            models = frozenset(info.model_ids) if info.model_ids is not None else None
            compiled.append(_Compiled(info, c, predicate, RuleMatch(info.name, info.actions), types, models,
                                      _reads_model(c.condition)))
        self._compiled = tuple(compiled)
        self.rules: tuple[RuleInfo, ...] = tuple(c.info for c in compiled)
        self.predicates: tuple[Predicate, ...] = tuple(c.predicate for c in compiled)
        # index[type or None][model_id or None] -> rule positions, ascending
        self._index: dict[object, dict[object, list[int]]] = {}
        for pos, c in enumerate(compiled):
            for type_ in c.types if c.types is not None else (None,):
                by_model = self._index.setdefault(type_, {})
                for model in c.models if c.models is not None else (None,):
                    by_model.setdefault(model, []).append(pos)
        # The cached merges of the index lists. alert type -> its plan for the models no rule names
        # (when no rule names a model, the only cache); alert type -> model_id -> Plan otherwise.
        self._names_models = any(model is not None for by_model in self._index.values() for model in by_model)
        self._any_model: dict[str, Plan] = {}
        self._plans: dict[str, dict[str, Plan]] = {}
        self._planned = 0

    def __len__(self) -> int:
        return len(self._compiled)

    def __repr__(self) -> str:
        return f"<CompiledRuleSet {self.filename} rules={len(self)} sha256={self.sha256[:12]}>"

    # --- the index ------------------------------------------------------------------------------
    def _merged(self, alert_type: str, model_id: str | None) -> Plan:
        compiled = [self._compiled[i] for i in self._positions(alert_type, model_id)]
        return Plan(tuple((c.predicate, c.match) for c in compiled), any(c.reads_model for c in compiled))

    def _positions(self, alert_type: str, model_id: str | None) -> list[int]:
        lists = []
        for type_key in (alert_type, None):
            by_model = self._index.get(type_key)
            if by_model:
                for model_key in (model_id, None) if model_id is not None else (None,):
                    if model_key in by_model:
                        lists.append(by_model[model_key])
        return list(heapq.merge(*lists))  # file order; a rule sits in one list per (type, model)

    def _plan(self, alert_type: str, model_id: str) -> Plan:
        if self._planned >= self._PLAN_CACHE:
            self._plans, self._any_model, self._planned = {}, {}, 0
        if any(model_id in self._index.get(type_key, ()) for type_key in (alert_type, None)):
            plan = self._merged(alert_type, model_id)
        else:
            # No rule names this model: the type's plan for any model, merged once per type (an
            # alert stream over ten thousand models would otherwise merge it once per model).
            plan = self._any_model.get(alert_type)
            if plan is None:
                plan = self._any_model[alert_type] = self._merged(alert_type, None)
                self._planned += 1
        if self._names_models:
            self._plans.setdefault(alert_type, {})[model_id] = plan
            self._planned += 1
        return plan

    def plan(self, alert_type: str, model_id: str) -> Plan:
        """The rules ``match`` runs for an alert of this type and model (cached)."""
        if self._names_models:
            by_model = self._plans.get(alert_type)
            plan = by_model.get(model_id) if by_model is not None else None
        else:
            plan = self._any_model.get(alert_type)
        return plan if plan is not None else self._plan(alert_type, model_id)

    # --- evaluation -----------------------------------------------------------------------------
    def match(self, alert: AlertFacts, model: ModelFacts | None) -> list[RuleMatch]:
        """The rules whose condition is true for this alert, in file order (hot path)."""
        # plan() inlined: plain dict lookups (no tuple key to build and hash; when no rule names a
        # model, one lookup in a dict of alert types rather than one in a dict of every model) and
        # a loop rather than a list comprehension (a frame of its own before Python 3.12): this is
        # most of the cost when the index leaves one rule to run.
        if self._names_models:
            by_model = self._plans.get(alert.type)
            plan = by_model.get(alert.model_id) if by_model is not None else None
        else:
            plan = self._any_model.get(alert.type)
        if plan is None:
            plan = self._plan(alert.type, alert.model_id)
        out = []
        for predicate, m in plan.rules:
            if predicate(alert, model):
                out.append(m)
        return out

    def match_all(self, alert: AlertFacts, model: ModelFacts | None) -> list[RuleMatch]:
        """Like match, but every rule is evaluated (no index). For tests and benchmarks."""
        return [c.match for c in self._compiled if c.predicate(alert, model)]

    def evaluated_rules(self, alert: AlertFacts) -> list[str]:
        """The names of the rules ``match`` evaluates for this alert (the index's candidates),
        from the same cached plan, so calling it for every alert stays cheap."""
        return [m.rule for _, m in self.plan(alert.type, alert.model_id).rules]

    def explain(self, alert: AlertFacts, model: ModelFacts | None) -> list[RuleExplanation]:
        """Per rule: the value of the condition and of each top-level clause, and the actions
        taken. Every rule is explained, including those the index would skip."""
        out = []
        for c in self._compiled:
            condition = c.checked.condition
            matched = evaluate(condition, alert, model)
            clauses = [(expr_text(n.src), evaluate(n, alert, model)) for n in _clauses(condition)]
            out.append(RuleExplanation(c.info.name, matched, clauses, c.info.actions if matched else ()))
        return out

    # --- facts about the rules, for the server ---------------------------------------------------
    def min_model_age_seconds(self) -> float | None:
        """The smallest age any rule requires with ``model.age > X`` (or >=): models older than
        this are worth an ``age`` alert from the server's sweep."""
        ages = []
        for c in self._compiled:
            for node in t.walk(c.checked.condition):
                if isinstance(node, t.Cmp):
                    got = t.ref_vs_const(node)
                    if got and got[0].path == "model.age" and got[1] in (">", ">="):
                        ages.append(float(got[2]))
        return min(ages) if ages else None

    def thresholds(self) -> list[Threshold]:
        """Every ``metrics.X OP number`` comparison, per rule, in file order."""
        out = []
        for c in self._compiled:
            for node in t.walk(c.checked.condition):
                if isinstance(node, t.Cmp):
                    got = t.ref_vs_const(node)
                    if got and got[0].kind == "metric":
                        span = node.src.span
                        out.append(Threshold(c.info.name, got[0].path, got[1], float(got[2]), span.line, span.column))
        return out
