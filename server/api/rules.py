"""RuleService: validate, apply, read, evaluate and backtest rule sets. No SQL here."""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg

from closedloop.dsl import DEFAULT_LIMITS, RuleCompileError, check, check_limits, compile_rules
from closedloop.dsl.facts import alert_facts
from closedloop.v1 import rules_pb2, rules_pb2_grpc

from ..errors import NotFound, RuleSetInvalid
from ..loop.backtest import BacktestReport, BacktestSide, run_backtest
from ..loop.decide import merge_retrains
from ..loop.model_cache import ModelFactsCache
from ..loop.rule_engine import RuleEngine
from ..store import rules as rule_store
from . import convert
from .auth import require_model
from .validation import Violations, check_alert, check_time

MAX_SOURCE_BYTES = DEFAULT_LIMITS.max_bytes  # the DSL's own size limit: one bound for files and RPCs
# Parsing a rule file within the DSL's limits takes up to ~2 s of CPU: it runs in a worker thread so
# the event loop keeps answering, and at most this many at once so hostile requests cannot pile up.
COMPILE_SLOTS = 2
CLAUSE_VALUES = {True: rules_pb2.CLAUSE_VALUE_TRUE, False: rules_pb2.CLAUSE_VALUE_FALSE,
                 None: rules_pb2.CLAUSE_VALUE_MISSING}


def _check_source(v: Violations, source: str, required: bool = True) -> None:
    if required and not source.strip():
        v.add("source", "required")
    if len(source.encode()) > MAX_SOURCE_BYTES:
        v.add("source", f"at most {MAX_SOURCE_BYTES} bytes")


def _source_of(request) -> str:
    """The request's rule text; a leading byte-order mark (an editor's, pasted along) is not part of it."""
    return request.source.removeprefix("\ufeff")


def _invalid(diagnostics, source: str) -> RuleSetInvalid:
    rendered = "\n".join(d.render(source) for d in diagnostics)
    return RuleSetInvalid(list(diagnostics), rendered)


def _compile(source: str, filename: str, targets: frozenset[str] | None = None):
    """Compile after the DSL's cheap size/token/rule bounds, so a hostile file is refused before it
    costs a parse. Runs in a worker thread (see RuleServicer._off_loop)."""
    over = check_limits(source, filename)
    if over:
        raise _invalid(over, source)
    try:
        return compile_rules(source, filename, targets=targets)
    except RuleCompileError as exc:
        raise _invalid(exc.diagnostics, source) from None


def _check_with_rules(source: str, filename: str, targets: frozenset[str] | None = None):
    over = check_limits(source, filename)
    if over:
        return over, []
    result = check(source, filename, targets=targets)
    return result.diagnostics, result.rules


def ruleset_message(version: int, compiled, create_time=None, diagnostics=()) -> rules_pb2.RuleSet:
    return rules_pb2.RuleSet(
        version=version, rules=[convert.rule_message(r) for r in compiled.rules], source=compiled.source,
        filename=compiled.filename, sha256=compiled.sha256, create_time=convert.timestamp(create_time),
        diagnostics=[convert.diagnostic_message(d, compiled.source) for d in diagnostics],
    )


def _side_message(side: BacktestSide) -> rules_pb2.BacktestSide:
    return rules_pb2.BacktestSide(
        rule_set_version=side.rule_set_version,
        rules=[rules_pb2.RuleTriggerCount(rule=r.rule, matches=r.matches, retrains=r.retrains) for r in side.rules],
        models=[rules_pb2.ModelJobCount(model_id=m, jobs=n) for m, n in side.jobs_by_model.items()],
        jobs=side.jobs)


def backtest_message(report: BacktestReport) -> rules_pb2.BacktestReport:
    return rules_pb2.BacktestReport(
        alerts=report.alerts, active=_side_message(report.active), candidate=_side_message(report.candidate),
        differences=[rules_pb2.BacktestDifference(alert_id=str(d.alert_id), model_id=d.model_id,
                                                  active_outcome=d.active_outcome,
                                                  candidate_outcome=d.candidate_outcome)
                     for d in report.differences],
        differences_total=report.differences_total)


class RuleServicer(rules_pb2_grpc.RuleServiceServicer):
    def __init__(self, pool: asyncpg.Pool, engine: RuleEngine, facts: ModelFactsCache) -> None:
        self.pool = pool
        self.engine = engine
        self.facts = facts
        self._compile_slots = asyncio.Semaphore(COMPILE_SLOTS)

    async def _off_loop(self, fn, *args):
        async with self._compile_slots:
            return await asyncio.to_thread(fn, *args)

    async def ValidateRules(self, request, context):
        v = Violations()
        _check_source(v, request.source, required=False)
        v.raise_if_any()
        filename = request.filename or "<rules>"
        source = _source_of(request)
        diagnostics, rules = await self._off_loop(_check_with_rules, source, filename, self.engine.targets)
        valid = not any(d.severity == "error" for d in diagnostics)
        return rules_pb2.ValidateRulesResponse(
            diagnostics=[convert.diagnostic_message(d, source) for d in diagnostics],
            rules=[convert.rule_message(r) for r in rules] if valid else [], valid=valid)

    async def ApplyRules(self, request, context):
        v = Violations()
        _check_source(v, request.source, required=False)  # an empty set turns automation off
        v.raise_if_any()
        filename = request.filename or "<rules>"
        compiled = await self._off_loop(_compile, _source_of(request), filename, self.engine.targets)
        warnings = list(compiled.diagnostics)  # compile kept its warnings: no second parse
        if request.dry_run:
            return ruleset_message(0, compiled, diagnostics=warnings)
        active = await self.engine.apply(compiled)
        async with self.pool.acquire() as conn:
            row = await rule_store.get_version(conn, active.version)
        return ruleset_message(active.version, compiled, row["create_time"], warnings)

    async def GetRuleSet(self, request, context):
        v = Violations()
        if request.version < 0:
            v.add("version", "must not be negative")
        v.raise_if_any()
        async with self.pool.acquire() as conn:
            row = (await rule_store.get_version(conn, request.version) if request.version
                   else await rule_store.active(conn))
        if row is None:
            raise NotFound(f"rule set version {request.version} not found" if request.version
                           else "no rule set is active")
        active = self.engine.active
        if active is not None and active.version == row["version"]:
            compiled = active.ruleset  # already compiled: the common case needs no parse
        else:
            compiled = await self._off_loop(compile_rules, row["source"], row["filename"])
        return ruleset_message(row["version"], compiled, row["create_time"])

    async def EvaluateRules(self, request, context):
        v = Violations()
        if not request.HasField("alert"):
            v.add("alert", "required")
        else:
            check_alert(v, request.alert)
            if request.alert.HasField("create_time"):
                check_time(v, request.alert.create_time, "alert.create_time")
        _check_source(v, request.source, required=False)
        v.raise_if_any()
        require_model(request.alert.model_id, "alert.model_id")
        if request.source:
            ruleset, version = await self._off_loop(_compile, _source_of(request), request.filename or "<rules>",
                                                   self.engine.targets), 0
        else:
            active = self.engine.active
            if active is None:
                raise NotFound("no rule set is active")
            ruleset, version = active.ruleset, active.version
        a = request.alert
        # The alert as if it arrived now; a stored alert (create_time set, e.g. from GetAlert) is
        # evaluated as of its arrival, so it sees the facts live ingest saw.
        received = (convert.from_timestamp(a.create_time) if a.HasField("create_time")
                    else dt.datetime.now(dt.timezone.utc))
        observe = convert.from_timestamp(a.observe_time) if a.HasField("observe_time") else received
        facts = alert_facts(type=a.type, model_id=a.model_id, severity=a.severity, metrics=dict(a.metrics),
                            labels=dict(a.labels), source=a.source, observe_time=observe, received=received)
        model = (await self.facts.get_many([a.model_id], received))[a.model_id]
        evaluations = []
        matched_actions = []
        for ex in ruleset.explain(facts, model):
            evaluations.append(rules_pb2.RuleEvaluation(
                rule=ex.rule, matched=bool(ex.matched),
                clauses=[rules_pb2.Clause(text=t, value=CLAUSE_VALUES[val]) for t, val in ex.clauses],
                actions=[convert.rule_action_message(s) for s in ex.actions] if ex.matched else []))
            if ex.matched:
                matched_actions.extend(ex.actions)
        merged = merge_retrains(matched_actions)
        merged_actions = []
        if merged is not None:
            merged_actions.append(rules_pb2.RuleAction(
                kind=convert.ACTION_KINDS["RETRAIN"], mode=convert.MODES[merged[0]], priority=merged[1]))
        return rules_pb2.EvaluateRulesResponse(evaluations=evaluations, rule_set_version=version,
                                               merged_actions=merged_actions)

    async def BacktestRules(self, request, context):
        v = Violations()
        _check_source(v, request.source)
        valid = True
        for name in ("start_time", "end_time"):
            if not request.HasField(name):
                v.add(name, "required")
                valid = False
            else:
                valid = check_time(v, getattr(request, name), name) and valid
        if valid and request.end_time.ToNanoseconds() <= request.start_time.ToNanoseconds():
            v.add("end_time", "must be after start_time")
        v.raise_if_any()
        candidate = await self._off_loop(_compile, _source_of(request), request.filename or "<candidate>",
                                             self.engine.targets)
        report = await run_backtest(self.pool, candidate, convert.from_timestamp(request.start_time),
                                    convert.from_timestamp(request.end_time))
        return backtest_message(report)
