"""The values that cross the DSL's public boundary: what a rule sees (AlertFacts, ModelFacts) and
what it says (ActionSpec, RuleInfo, RuleMatch, RuleExplanation, Threshold).

Plain frozen dataclasses: the server builds AlertFacts from the Alert message and ModelFacts from
the registry for every alert, so they are slotted and cheap to construct, and the compiled rules
read their attributes directly.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Mapping

from .schema import LEVEL_NAMES, format_duration


@dataclass(frozen=True, slots=True)
class AlertFacts:
    """What a rule can see of an alert."""

    type: str
    model_id: str
    severity: int  # 1=low, 2=medium, 3=high, 4=critical (the proto Severity numbers)
    metrics: Mapping[str, float]
    labels: Mapping[str, str]
    source: str = ""
    age_seconds: float = 0.0  # create_time - observe_time: see alert_facts()


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """Registry facts about the alert's model. Pass None instead when the model is unregistered:
    then ``model.registered`` is false and every other model fact is missing."""

    registered: bool
    enabled: bool
    version: int
    age_seconds: float | None  # since the current version was trained; None: no version yet
    last_retrained_seconds: float | None  # since the last retrain; None: never retrained


def _seconds_between(earlier: dt.datetime | None, later: dt.datetime) -> float | None:
    if earlier is None:
        return None
    seconds = (later - earlier).total_seconds()
    return seconds if seconds > 0.0 else 0.0


# alert_facts() and model_facts() run for every alert ingested or replayed. A frozen dataclass's
# __init__ sets each field through object.__setattr__ (about 1.3 us for AlertFacts); writing the
# slots through their descriptors builds the same immutable object in half that. The tests hold
# both ways equal (tests/dsl/test_dsl_facts.py), and a field added to a class without its setter
# here leaves an unset slot, which any comparison or read reports at once.
_new = object.__new__


def _setter(cls: type, name: str):
    return cls.__dict__[name].__set__  # the slot's member descriptor


_set_type, _set_model_id, _set_severity, _set_metrics, _set_labels, _set_source, _set_alert_age = (
    _setter(AlertFacts, name)
    for name in ("type", "model_id", "severity", "metrics", "labels", "source", "age_seconds"))
_set_registered, _set_enabled, _set_version, _set_model_age, _set_last_retrained = (
    _setter(ModelFacts, name)
    for name in ("registered", "enabled", "version", "age_seconds", "last_retrained_seconds"))


def alert_facts(*, type: str, model_id: str, severity: int, metrics: Mapping[str, float],
                labels: Mapping[str, str], source: str, observe_time: dt.datetime,
                received: dt.datetime) -> AlertFacts:
    """The one way the server builds what a rule sees of an alert: live ingest, backtests,
    EvaluateRules and the feedback report's replay all call this, so a rule decides the same
    way on the same alert wherever it is evaluated.

    ``received`` is the reference time of every time-relative fact: when the server received
    the alert (its create_time; for an alert not stored, as in EvaluateRules, the time of the
    call). ``age`` is therefore the alert's age on arrival, ``received - observe_time``
    (never negative: a clock ahead of the server's counts as 0), and does not grow while the
    alert is replayed later.
    """
    age = (received - observe_time).total_seconds()
    facts = _new(AlertFacts)
    _set_type(facts, type)
    _set_model_id(facts, model_id)
    _set_severity(facts, severity)
    _set_metrics(facts, metrics)
    _set_labels(facts, labels)
    _set_source(facts, source)
    _set_alert_age(facts, age if age > 0.0 else 0.0)
    return facts


def model_facts(*, enabled: bool, version: int, version_time: dt.datetime | None,
                retrained_time: dt.datetime | None, received: dt.datetime) -> ModelFacts:
    """Registry facts of a registered model, relative to the same reference time as alert_facts():
    ``model.age`` is how old the current version (promoted at ``version_time``) was when the alert
    arrived, ``model.last_retrained`` the time since ``retrained_time``."""
    facts = _new(ModelFacts)
    _set_registered(facts, True)
    _set_enabled(facts, enabled)
    _set_version(facts, version)
    _set_model_age(facts, _seconds_between(version_time, received))
    _set_last_retrained(facts, _seconds_between(retrained_time, received))
    return facts


class _Unregistered:
    """Stands in for ``None`` inside compiled rules, so they read ``m.version`` without a test:
    every fact but ``registered`` is None, i.e. missing."""

    __slots__ = ()
    registered = False
    enabled = None
    version = None
    age_seconds = None
    last_retrained_seconds = None


UNREGISTERED = _Unregistered()


@dataclass(frozen=True)
class ActionSpec:
    """One action of a rule, as the checker understood it.

    Cooldown scope (for the decision engine): without ``per model`` the rule does not act again
    on the same model until ``cooldown_seconds`` after it last acted on it; with ``per model``
    (``cooldown_per_model``) any retrain of that model, whichever rule or person asked for it,
    starts the window.
    """

    kind: str  # "retrain" | "record" | "notify" | "rollback"
    mode: str | None = None  # "full" | "incremental" for retrain
    priority: int | None = None  # 1..4 like severity
    cooldown_seconds: float | None = None
    cooldown_per_model: bool = False
    target: str | None = None  # notify: the configured notification target it names

    def describe(self) -> str:
        """The canonical text of the action, as `rules fmt` would write it."""
        words = [self.kind]
        if self.target:
            words.append(self.target)
        if self.mode:
            words.append(self.mode)
        if self.priority is not None:
            words += ["priority", LEVEL_NAMES.get(self.priority, str(self.priority))]
        if self.cooldown_seconds is not None:
            words += ["cooldown", format_duration(self.cooldown_seconds)]
            if self.cooldown_per_model:
                words += ["per", "model"]
        return " ".join(words)


@dataclass(frozen=True)
class RuleInfo:
    name: str
    title: str  # "" when the rule has none
    condition: str  # canonical text
    actions: tuple[ActionSpec, ...]
    alert_types: tuple[str, ...] | None  # the alert types the rule can match; None: any
    line: int
    model_ids: tuple[str, ...] | None = None  # the models the rule can match; None: any


@dataclass(frozen=True)
class RuleMatch:
    rule: str
    actions: tuple[ActionSpec, ...]


@dataclass(frozen=True)
class RuleExplanation:
    """Why a rule did or did not match. ``matched`` and each clause value are True, False, or
    None when the clause read a metric, label or model fact the alert or registry lacks."""

    rule: str
    matched: bool | None
    clauses: list[tuple[str, bool | None]] = field(default_factory=list)
    actions: tuple[ActionSpec, ...] = ()  # the actions taken: empty unless matched


@dataclass(frozen=True)
class Threshold:
    """A comparison ``metrics.X OP literal`` in a rule (literal on the right after
    normalising ``0.25 < metrics.x`` to ``metrics.x > 0.25``). line/column: where the
    comparison starts."""

    rule: str
    field: str
    op: str
    value: float
    line: int
    column: int
