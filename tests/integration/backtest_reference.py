"""The backtest as it was computed before it replayed keyset pages (issue 15): every alert of the
window read and decoded first, then the actions of all of them, then one loop over decoded rows.
Kept only as the oracle of test_backtest_replay.py: the server's backtest must give exactly this
report however it reads and replays the history."""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict

from closedloop.dsl.facts import alert_facts, model_facts
from closedloop.server.loop.backtest import (DEFAULT_JOB_SECONDS, MAX_DIFFERENCES, BacktestDifference,
                                             BacktestReport, BacktestSide, RuleCount, _outcome, _VersionClock)
from closedloop.server.loop.decide import Decider, ModelState
from closedloop.server.store import alerts as alert_store
from closedloop.server.store import history


async def reference_backtest(pool, candidate, start: dt.datetime, end: dt.datetime) -> BacktestReport:
    async with pool.acquire() as conn:
        alerts = await alert_store.alerts_in_window(conn, start, end)
        actions = await history.actions_for_alerts(conn, alerts)
        registry = {r["model_id"]: r for r in await history.registry(conn)}
        job_seconds = await history.typical_job_seconds(conn)
        clock = _VersionClock(await history.promotions(conn))

    active_by_alert: dict[int, list] = defaultdict(list)
    active_rules: dict[str, Counter] = defaultdict(Counter)
    active_jobs: dict[str, set] = defaultdict(set)
    versions = Counter()
    for a in actions:
        active_by_alert[a["alert_id"]].append((a["rule"], a["decision"], a["mode"], a["priority"]))
        if a["decision"] == "QUEUED" and a["job_id"] is not None:
            active_jobs[a["model_id"]].add(a["job_id"])
    seen_rule_alert = set()
    for a in actions:
        if (a["rule"], a["alert_id"]) not in seen_rule_alert:
            seen_rule_alert.add((a["rule"], a["alert_id"]))
            active_rules[a["rule"]]["matches"] += 1
        if a["decision"] == "QUEUED":
            active_rules[a["rule"]]["retrains"] += 1
    for al in alerts:
        versions[al["rule_set_version"]] += 1

    states = {m: ModelState(registered=True, enabled=r["enabled"], cooldown_override_s=r["cooldown_override_s"],
                            max_retrains_per_day=r["max_retrains_per_day"], current_version=r["current_version"])
              for m, r in registry.items()}
    decider = Decider(start, states)
    job_until: dict[str, dt.datetime] = {}
    day_jobs: dict[str, list[dt.datetime]] = defaultdict(list)
    cand_rules: dict[str, Counter] = defaultdict(Counter)
    cand_jobs: Counter = Counter()
    differences = []
    total_diff = 0
    next_job = -1
    for al in alerts:
        now = al["observe_time"]
        model_id = al["model_id"]
        decider.now = now
        state = states.get(model_id)
        if state is not None:
            if state.active_job is not None and job_until.get(model_id, now) <= now:
                state.active_job = None
            recent = [t for t in day_jobs[model_id] if now - t < dt.timedelta(days=1)]
            day_jobs[model_id] = recent
            state.automated_today = len(recent)
            version, since = clock.at(model_id, al["create_time"])
            model = model_facts(enabled=state.enabled, version=version, version_time=since, retrained_time=since,
                                received=al["create_time"])
        else:
            model = None
        alert = alert_facts(type=al["alert_type"], model_id=model_id, severity=al["severity"], metrics=al["metrics"],
                            labels=al["labels"], source=al["source"], observe_time=now, received=al["create_time"])
        matches = candidate.match(alert, model)
        decision = decider.decide(model_id, matches)
        for m in matches:
            cand_rules[m.rule]["matches"] += 1
        if decision.retrain is not None and decision.retrain.coalesce_into is None:
            decider.job_started(model_id, next_job)
            next_job -= 1
            job_until[model_id] = now + dt.timedelta(seconds=job_seconds.get(model_id, DEFAULT_JOB_SECONDS))
            day_jobs[model_id].append(now)
            cand_jobs[model_id] += 1
        for a in decision.actions:
            if a.decision == "QUEUED":
                cand_rules[a.rule]["retrains"] += 1
        cand = _outcome([(a.rule, a.decision, a.mode, a.priority) for a in decision.actions])
        act = _outcome(active_by_alert.get(al["id"], []))
        if cand != act:
            total_diff += 1
            if len(differences) < MAX_DIFFERENCES:
                differences.append(BacktestDifference(al["id"], model_id, act, cand))

    def side(rules: dict[str, Counter], jobs: dict, version: int) -> BacktestSide:
        return BacktestSide(
            rule_set_version=version,
            rules=[RuleCount(r, c["matches"], c["retrains"]) for r, c in sorted(rules.items())],
            jobs_by_model=dict(sorted(jobs.items())), jobs=sum(jobs.values()))

    active_version = versions.most_common(1)[0][0] if versions else 0
    return BacktestReport(
        alerts=len(alerts),
        active=side(active_rules, {m: len(j) for m, j in active_jobs.items()}, active_version),
        candidate=side(cand_rules, dict(cand_jobs), 0),
        differences=differences, differences_total=total_diff,
    )
