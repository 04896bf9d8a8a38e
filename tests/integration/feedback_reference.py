"""The feedback report as it was computed before the daily aggregates (issue 15): every figure from
the raw rows of the window, in one pass. Kept only as the oracle of test_feedback_aggregates.py:
the server's report must give exactly these figures however much of it the aggregates hold."""

from __future__ import annotations

from collections import defaultdict

from closedloop.dsl import RuleCompileError, compile_rules
from closedloop.dsl.facts import alert_facts
from closedloop.server.feedback.definitions import beat_champion, missed, verdict
from closedloop.server.feedback.report import (DEFAULT_FN_WINDOW, DEFAULT_WINDOW, DEFINITIONS, MAX_VERDICTS,
                                               ActionVerdict, FeedbackReport, _Group)
from closedloop.server.feedback.suggest import suggest_thresholds
from closedloop.server.store.models import like_patterns


async def reference_report(pool, *, model_id, rule, start, end, fn_window=None, active_ruleset=None,
                           scopes=None) -> FeedbackReport:
    fn_window = fn_window or DEFAULT_FN_WINDOW
    start = start or end - DEFAULT_WINDOW
    patterns = like_patterns(scopes)
    async with pool.acquire() as conn:
        actions = await conn.fetch(
            """SELECT c.id, c.alert_id, c.model_id, c.rule, c.kind, c.decision, c.job_id, a.observe_time,
                      a.metrics AS alert_metrics
                 FROM closed_loop_actions c JOIN monitoring_alert_triggers a ON a.id = c.alert_id
                WHERE a.observe_time >= $1 AND a.observe_time < $2
                  AND ($3::text IS NULL OR c.model_id = $3) AND ($4::text IS NULL OR c.rule = $4)
                  AND ($5::text[] IS NULL OR c.model_id LIKE ANY($5::text[]))
                ORDER BY c.id""", start, end, model_id, rule, patterns)
        outcomes_rows = await conn.fetch(
            """SELECT * FROM feedback_loop_metrics
                WHERE time >= $1 AND time < $2 AND ($3::text IS NULL OR model_id = $3)
                  AND ($4::text[] IS NULL OR model_id LIKE ANY($4::text[]))
                ORDER BY time""", start, end + fn_window + DEFAULT_WINDOW, model_id, patterns)
        alerts = await conn.fetch(
            """SELECT * FROM monitoring_alert_triggers
                WHERE observe_time >= $1 AND observe_time < $2 AND ($3::text IS NULL OR model_id = $3)
                  AND ($4::text[] IS NULL OR model_id LIKE ANY($4::text[]))
                ORDER BY observe_time, id""", start, end, model_id, patterns)
        sources = {r["version"]: r for r in await conn.fetch(
            "SELECT version, source, filename FROM automated_response_rules")}
    outcomes = {o["job_id"]: o for o in outcomes_rows}

    by_rule, by_model = defaultdict(_Group), defaultdict(_Group)
    triggers = defaultdict(set)
    fired, perf_by_model, verdicts = set(), defaultdict(list), []
    for a in alerts:
        if a["alert_type"] == "performance":
            perf_by_model[a["model_id"]].append(a)
    for act in actions:
        fired.add((act["alert_id"], act["rule"]))
        for key, group in ((("r", act["rule"]), by_rule[act["rule"]]), (("m", act["model_id"]), by_model[act["model_id"]])):
            triggers[key].add(act["alert_id"])
            group.decisions[act["decision"]] += 1
            if act["decision"] == "QUEUED" and act["job_id"] is not None:
                group.jobs[act["job_id"]] = act
        if act["kind"] == "RETRAIN" and act["decision"] == "QUEUED" and act["job_id"] is not None:
            o = outcomes.get(act["job_id"])
            perf = perf_by_model.get(act["model_id"], [])
            before = [a for a in perf if a["observe_time"] <= act["observe_time"]]
            after = [a for a in perf if o is not None and a["observe_time"] > o["time"]]
            judgement = verdict(o, before[-1] if before else None, after[0] if after else None)
            by_rule[act["rule"]].verdicts[judgement] += 1
            by_model[act["model_id"]].verdicts[judgement] += 1
            if len(verdicts) < MAX_VERDICTS:
                verdicts.append(ActionVerdict(
                    action_id=act["id"], alert_id=act["alert_id"], rule=act["rule"], model_id=act["model_id"],
                    job_id=act["job_id"], verdict=judgement, improvement=(o["improvement"] or 0.0) if o else 0.0))
    for (kind, name), ids in triggers.items():
        (by_rule if kind == "r" else by_model)[name].triggers = len(ids)

    helpful_by_model = defaultdict(list)
    for o in outcomes_rows:
        if beat_champion(o):
            helpful_by_model[o["model_id"]].append(o["time"])
    compiled = {}
    for version, row in sources.items():
        try:
            compiled[version] = compile_rules(row["source"], row["filename"])
        except RuleCompileError:
            continue
    quiet_alerts = defaultdict(list)
    for a in alerts:
        ruleset = compiled.get(a["rule_set_version"])
        if ruleset is None:
            continue
        facts = alert_facts(type=a["alert_type"], model_id=a["model_id"], severity=a["severity"],
                            metrics=a["metrics"], labels=a["labels"], source=a["source"],
                            observe_time=a["observe_time"], received=a["create_time"])
        for name in ruleset.evaluated_rules(facts):
            if (rule and name != rule) or (a["id"], name) in fired:
                continue
            was_missed = missed(a["observe_time"], helpful_by_model.get(a["model_id"], ()), fn_window)
            by_rule[name].quiet += 1
            by_rule[name].quiet_missed += was_missed
            quiet_alerts[name].append((a, was_missed))

    manual = _Group()
    for o in outcomes_rows:
        if o["manual"] and start <= o["time"] < end:
            manual.jobs[o["job_id"]] = o
    suggestions = (suggest_thresholds(active_ruleset, actions, outcomes, quiet_alerts, rule)
                   if active_ruleset is not None else [])
    return FeedbackReport(
        start_time=start, end_time=end,
        rules={r: g.stats(outcomes) for r, g in sorted(by_rule.items())},
        models={m: g.stats(outcomes) for m, g in sorted(by_model.items())},
        manual=manual.stats(outcomes), verdicts=verdicts, suggestions=suggestions, definitions=list(DEFINITIONS))
