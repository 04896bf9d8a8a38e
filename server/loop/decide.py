"""The loop's decision rules, as pure logic over a snapshot of the models' state.

The ingest path locks the models' registry rows, loads a `ModelState` per model, and asks
`Decider.decide()` what to do with each alert's rule matches, in order. The decider updates the
snapshot as it goes (a queued job makes the next alert in the batch coalesce), so a whole batch is
decided with one read; the SQL around it lives in `ingest.py`.

Order of checks for a retrain, per rule: unregistered/disabled model → RECORDED; the rule's
cooldown → SKIPPED_COOLDOWN; then for the rules still wanting a retrain, merged (full beats
incremental, highest priority wins): an active job → COALESCED into it; the daily budget →
SKIPPED_BUDGET; else QUEUED, one job.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Iterable

from closedloop.dsl import ActionSpec, RuleMatch
from closedloop.dsl.schema import LEVEL_NAMES, format_duration

DEFAULT_MODE = "FULL"    # a `retrain` without a mode
DEFAULT_PRIORITY = 2     # a `retrain` without a priority: medium
KIND_NAMES = {"retrain": "RETRAIN", "record": "RECORD", "notify": "NOTIFY", "rollback": "ROLLBACK"}


@dataclass
class ModelState:
    """What the decider needs to know about one model, read under its row lock."""

    registered: bool
    enabled: bool = False
    cooldown_override_s: float | None = None
    max_retrains_per_day: int | None = None
    current_version: int = 0
    last_queued_by_rule: dict[str, dt.datetime] = field(default_factory=dict)
    last_automated: dt.datetime | None = None
    automated_today: int = 0
    active_job: int | None = None


@dataclass(frozen=True, slots=True)
class PlannedAction:
    """One closed_loop_actions row to write. `job` is filled for QUEUED/COALESCED after enqueue."""

    rule: str
    kind: str
    mode: str | None
    priority: int | None
    decision: str
    reason: str
    cooldown_until: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class RetrainRequest:
    """The merged retrain an alert asks for: enqueue it (or coalesce into the active job)."""

    mode: str
    priority: int
    rules: tuple[str, ...]
    coalesce_into: int | None


@dataclass(frozen=True, slots=True)
class AlertDecision:
    actions: list[PlannedAction]
    retrain: RetrainRequest | None
    rollback: PlannedAction | None

    @property
    def alert_state(self) -> str:
        decisions = {a.decision for a in self.actions if a.kind == "RETRAIN"}
        if decisions & {"QUEUED", "COALESCED"}:
            return "ACTIONED"
        if decisions & {"SKIPPED_COOLDOWN", "SKIPPED_BUDGET"}:
            return "SUPPRESSED"
        if self.rollback is not None:
            return "ACTIONED"
        return "OPEN"


# decide() builds these for every alert a rule matches: hundreds of thousands in a backtest. A frozen
# dataclass's __init__ sets each field through object.__setattr__; writing the slots through their
# member descriptors (as closedloop.dsl.facts does for the facts) builds the same immutable object in
# half the time. tests/unit/test_decide.py holds them equal to the constructors; a field added
# without its setter here leaves an unset slot, which any read or comparison reports at once.
_new = object.__new__


def _setters(cls: type, *names: str) -> tuple:
    return tuple(cls.__dict__[name].__set__ for name in names)  # the slots' member descriptors


_set_rule, _set_kind, _set_mode, _set_priority, _set_decision, _set_reason, _set_until = _setters(
    PlannedAction, "rule", "kind", "mode", "priority", "decision", "reason", "cooldown_until")
_set_merged_mode, _set_merged_priority, _set_rules, _set_coalesce_into = _setters(
    RetrainRequest, "mode", "priority", "rules", "coalesce_into")
_set_actions, _set_retrain, _set_rollback = _setters(AlertDecision, "actions", "retrain", "rollback")


def _planned(rule: str, kind: str, mode: str | None, priority: int | None, decision: str, reason: str,
             cooldown_until: dt.datetime | None = None) -> PlannedAction:
    action = _new(PlannedAction)
    _set_rule(action, rule)
    _set_kind(action, kind)
    _set_mode(action, mode)
    _set_priority(action, priority)
    _set_decision(action, decision)
    _set_reason(action, reason)
    _set_until(action, cooldown_until)
    return action


def _retrain(mode: str, priority: int, rules: tuple[str, ...], coalesce_into: int | None) -> RetrainRequest:
    request = _new(RetrainRequest)
    _set_merged_mode(request, mode)
    _set_merged_priority(request, priority)
    _set_rules(request, rules)
    _set_coalesce_into(request, coalesce_into)
    return request


def _decision(actions: list[PlannedAction], retrain: RetrainRequest | None,
              rollback: PlannedAction | None) -> AlertDecision:
    decision = _new(AlertDecision)
    _set_actions(decision, actions)
    _set_retrain(decision, retrain)
    _set_rollback(decision, rollback)
    return decision


def retrain_mode(spec: ActionSpec) -> str:
    """FULL or INCREMENTAL: what a retrain action asks for."""
    return (spec.mode or DEFAULT_MODE).upper()


def merge_retrains(specs: Iterable[ActionSpec]) -> tuple[str, int] | None:
    """The one retrain several retrain actions of an alert add up to: full beats incremental, the
    highest priority wins. None when there is no retrain action among `specs`."""
    merged = None
    for spec in specs:
        if spec.kind != "retrain":
            continue
        mode, priority = retrain_mode(spec), spec.priority or DEFAULT_PRIORITY
        if merged is not None:
            mode = "FULL" if "FULL" in (mode, merged[0]) else "INCREMENTAL"
            priority = max(priority, merged[1])
        merged = (mode, priority)
    return merged


class Decider:
    def __init__(self, now: dt.datetime, states: dict[str, ModelState], *, reasons: bool = True) -> None:
        """`reasons`: format the reason texts of the PlannedActions. A backtest, which compares
        decisions and never shows why, passes False: those reasons are "", the decisions the same."""
        self.now = now
        self.states = states
        self.reasons = reasons
        # A rule set has few distinct cooldowns: each one's timedelta and text, built once.
        self._spans: dict[float, dt.timedelta] = {}
        self._cooldown_texts: dict[tuple, str] = {}

    def decide(self, model_id: str, matches: list[RuleMatch]) -> AlertDecision:
        state = self.states.get(model_id) or ModelState(registered=False)
        actions: list[PlannedAction] = []
        # the rules still wanting a retrain after their cooldowns, and their retrain actions
        wanting: list[str] = []
        wanting_specs: list[ActionSpec] = []
        rollback = None
        for match in matches:
            for spec in match.actions:
                kind = KIND_NAMES[spec.kind]
                mode = spec.mode.upper() if spec.mode else None
                if spec.kind in ("record", "notify"):
                    actions.append(_planned(match.rule, kind, None, None, "RECORDED",
                                            f"{spec.kind}: rule matched" if self.reasons else ""))
                    continue
                unavailable = self._unavailable(state)
                if unavailable:
                    actions.append(_planned(match.rule, kind, mode, spec.priority, "RECORDED", unavailable))
                    continue
                if spec.kind == "rollback":
                    planned = _planned(match.rule, kind, None, spec.priority, "ROLLED_BACK",
                                       "return to the previous version")
                    if state.current_version <= 1 or rollback is not None:
                        planned = _planned(match.rule, kind, None, spec.priority, "RECORDED",
                                           "no earlier version to return to" if rollback is None
                                           else "rollback already taken for this alert")
                    else:
                        rollback = planned
                    actions.append(planned)
                    continue
                until = self._cooldown_until(state, match.rule, spec)
                if until is not None:
                    actions.append(_planned(
                        match.rule, kind, mode, spec.priority, "SKIPPED_COOLDOWN",
                        f"cooldown of {self._cooldown_text(state, spec)} for model {model_id} runs until "
                        f"{until.isoformat(timespec='seconds')}" if self.reasons else "", until))
                    continue
                wanting.append(match.rule)
                wanting_specs.append(spec)
        retrain = None
        if wanting:
            mode, priority = merge_retrains(wanting_specs)
            rules = tuple(wanting)
            if state.active_job is not None:
                retrain = _retrain(mode, priority, rules, state.active_job)
                reason = f"joined active job {state.active_job} of model {model_id}" if self.reasons else ""
                decision = "COALESCED"
            elif state.max_retrains_per_day and state.automated_today >= state.max_retrains_per_day:
                reason = (f"daily budget of {state.max_retrains_per_day} automated retrains for model "
                          f"{model_id} is spent" if self.reasons else "")
                decision = "SKIPPED_BUDGET"
            else:
                retrain = _retrain(mode, priority, rules, None)
                reason = (f"retrain {mode.lower()} at priority {LEVEL_NAMES[priority]} (merged from {len(rules)} "
                          "rule(s))" if self.reasons else "")
                decision = "QUEUED"
                state.automated_today += 1
                state.last_automated = self.now
                for rule in rules:
                    state.last_queued_by_rule[rule] = self.now
            for rule, spec in zip(rules, wanting_specs):
                actions.append(_planned(rule, "RETRAIN", retrain_mode(spec), spec.priority, decision, reason))
        return _decision(actions, retrain, rollback)

    def job_started(self, model_id: str, job_id: int) -> None:
        """Record the job the ingest path created, so later alerts of the batch coalesce into it."""
        self.states[model_id].active_job = job_id

    @staticmethod
    def _unavailable(state: ModelState) -> str | None:
        if not state.registered:
            return "model is not registered for retraining"
        if not state.enabled:
            return "model is disabled for automated retraining"
        return None

    @staticmethod
    def _cooldown_seconds(state: ModelState, spec: ActionSpec) -> float | None:
        if state.cooldown_override_s is not None:
            return state.cooldown_override_s
        return spec.cooldown_seconds

    def _cooldown_text(self, state: ModelState, spec: ActionSpec) -> str:
        seconds = self._cooldown_seconds(state, spec) or 0
        key = (seconds, spec.cooldown_per_model, state.cooldown_override_s is not None)
        text = self._cooldown_texts.get(key)
        if text is None:
            scope = "the model" if spec.cooldown_per_model else "the rule"
            source = "model override" if state.cooldown_override_s is not None else scope
            text = self._cooldown_texts[key] = f"{format_duration(seconds)} ({source})"
        return text

    def _cooldown_until(self, state: ModelState, rule: str, spec: ActionSpec) -> dt.datetime | None:
        seconds = self._cooldown_seconds(state, spec)
        if not seconds:
            return None
        last = state.last_automated if spec.cooldown_per_model else state.last_queued_by_rule.get(rule)
        if last is None:
            return None
        span = self._spans.get(seconds)
        if span is None:
            span = self._spans[seconds] = dt.timedelta(seconds=seconds)
        until = last + span
        return until if until > self.now else None
