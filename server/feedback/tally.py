"""The alert-proportional figures of the feedback report, counted per alert: triggers, actions by
decision, and the rules an alert was checked against that stayed quiet. The roll-up counts them into
the daily aggregates and the report counts the alerts the aggregates do not hold yet, with these same
functions, so both agree by construction."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Hashable, Iterable, Mapping

from closedloop.dsl import RuleCompileError, compile_rules
from closedloop.dsl.facts import alert_facts


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


def compile_sources(sources: Mapping[int, Mapping]) -> dict:
    """Rule set version -> compiled set, from automated_response_rules rows."""
    compiled = {}
    for version, row in sources.items():
        try:
            compiled[version] = compile_rules(row["source"], row["filename"])
        except RuleCompileError:
            continue  # a set stored by an older closedloop that no longer compiles: skip its alerts
    return compiled


def quiet_rules(alert, fired: set[str], compiled: dict) -> list[str]:
    """The rules of the set the alert met that were checked against it and did not act on it."""
    ruleset = compiled.get(alert["rule_set_version"])
    if ruleset is None:
        return []
    facts = alert_facts(type=alert["alert_type"], model_id=alert["model_id"], severity=alert["severity"],
                        metrics=alert["metrics"], labels=alert["labels"], source=alert["source"],
                        observe_time=alert["observe_time"], received=alert["create_time"])
    return [name for name in ruleset.evaluated_rules(facts) if name not in fired]


def tally(alerts: Iterable, actions_by_alert: Mapping[int, list], compiled: dict,
          key: Callable[[Mapping], Hashable]) -> Tallies:
    """Count `alerts` (with their actions) under key(alert), per model and rule."""
    out = Tallies()
    for a in alerts:
        k, model = key(a), a["model_id"]
        acts = actions_by_alert.get(a["id"], [])
        fired = {act["rule"] for act in acts}
        for act in acts:
            out.rules[(k, model, act["rule"])].decisions[act["decision"]] += 1
        for rule in fired:
            out.rules[(k, model, rule)].triggers += 1
        if acts:
            out.models[(k, model)] += 1
        for rule in quiet_rules(a, fired, compiled):
            out.rules[(k, model, rule)].quiet += 1
    return out
