"""The alert-proportional figures of the feedback report, counted per alert: triggers, actions by
decision, and the rules an alert was checked against that stayed quiet. The roll-up counts them into
the daily aggregates and the report counts the alerts the aggregates do not hold yet, with these same
functions, so both agree by construction.

What is counted of an alert is only its model, type, rule set version and actions: alerts alike in
those count alike, so the report's store query hands them over grouped, with how many there are."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Hashable, Iterable, Mapping, NamedTuple, Sequence

from closedloop.dsl import RuleCompileError, compile_rules
from closedloop.dsl.facts import alert_facts

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


@dataclass
class Tally:
    """One rule's counts for one model (and one day, in the roll-up)."""

    triggers: int = 0
    decisions: dict = field(default_factory=lambda: defaultdict(int))
    quiet: int = 0


@dataclass
class Tallies:
    rules: dict = field(default_factory=lambda: defaultdict(Tally))   # (key, model_id, rule) -> Tally
    models: dict = field(default_factory=lambda: defaultdict(int))    # (key, model_id) -> triggers


class Counted(NamedTuple):
    """`n` alerts of one model, type and rule set version with the same actions, counted under `key`."""

    key: Hashable
    model_id: str
    alert_type: str
    rule_set_version: int | None
    actions: Sequence[tuple[str, str]]   # (rule, decision) of each action, in action order
    n: int = 1


def compile_sources(sources: Mapping[int, Mapping]) -> dict:
    """Rule set version -> compiled set, from automated_response_rules rows."""
    compiled = {}
    for version, row in sources.items():
        try:
            compiled[version] = compile_rules(row["source"], row["filename"])
        except RuleCompileError:
            continue  # a set stored by an older closedloop that no longer compiles: skip its alerts
    return compiled


class CheckedRules:
    """The rules of its set an alert was checked against (CompiledRuleSet.evaluated_rules: the rule
    index's candidates). The index chooses them by the alert's type and model id alone, never by
    its metrics, labels or times, and every model that no rule of the set names (RuleInfo.model_ids)
    gets the same ones; so they are looked up once per set version, type and named model, not from
    every alert's facts: the report asks this for tens of thousands of alerts."""

    def __init__(self, compiled: dict) -> None:
        self.compiled = compiled
        self._named = {version: {m for r in ruleset.rules for m in r.model_ids or ()}
                       for version, ruleset in compiled.items()}
        self._memo: dict[tuple, tuple[str, ...]] = {}
        self._quiet: dict[tuple, tuple[str, ...]] = {}

    def __call__(self, version: int | None, alert_type: str, model_id: str) -> tuple[str, ...]:
        ruleset = self.compiled.get(version)
        if ruleset is None:
            return ()
        key = (version, alert_type, model_id if model_id in self._named[version] else None)
        names = self._memo.get(key)
        if names is None:
            names = tuple(ruleset.evaluated_rules(alert_facts(
                type=alert_type, model_id=model_id, severity=1, metrics={}, labels={}, source="",
                observe_time=_EPOCH, received=_EPOCH)))
            self._memo[key] = names
        return names

    def quiet(self, version: int | None, alert_type: str, model_id: str, fired: tuple[str, ...]) -> tuple[str, ...]:
        """The rules checked against such an alert that did not act on it (`fired`: those that did).
        Memoised like the checked rules: the report asks this for every alert it replays."""
        named = self._named.get(version)
        key = (version, alert_type, model_id if named and model_id in named else None, fired)
        names = self._quiet.get(key)
        if names is None:
            names = self._quiet[key] = tuple(name for name in self(version, alert_type, model_id) if name not in fired)
        return names


def tally(counted: Iterable[Counted], checked: CheckedRules) -> Tallies:
    """Count the alerts per key, model and rule."""
    out = Tallies()
    for k, model, alert_type, version, acts, n in counted:
        fired = tuple(dict.fromkeys(rule for rule, _ in acts))  # each rule once, in action order
        for rule, decision in acts:
            out.rules[(k, model, rule)].decisions[decision] += n
        for rule in fired:
            out.rules[(k, model, rule)].triggers += n
        if acts:
            out.models[(k, model)] += n
        for rule in checked.quiet(version, alert_type, model, fired):
            out.rules[(k, model, rule)].quiet += n
    return out
