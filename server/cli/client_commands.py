"""The client commands of the CLI: alerts, models, jobs, rules, feedback, audit — all through the public client.

Each command takes the parsed arguments (the tree is in cli/__init__.py) and returns the exit status.
Output is a readable table by default (render.py) and JSON with --json. A server that is down or an
argument the server rejects prints one line (the status and its message) and exits 1. Nothing here
imports the server: only closedloop.Client, the v1 messages and closedloop.dsl.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import pathlib
import sys
from typing import Any, Callable

import grpc
from google.protobuf import json_format

from closedloop import Client
from closedloop.dsl import RuleCompileError, check_rule_tree, read_rule_tree
from closedloop.dsl import tools as rule_tools
from closedloop.v1 import alert_pb2, common_pb2, notify_pb2, retrain_pb2

from ..errors import ServerError
from .render import as_json, enum_name, fmt_metric, job_progress_line, print_alert_actions, render_report, table, ts


class CliError(ServerError):
    """A problem to report as one line (exit 1)."""


def _client(args: argparse.Namespace) -> Client:
    return Client(args.target, token=args.token, timeout=args.timeout, retries=1)


def _rpc_error(exc: grpc.RpcError) -> CliError:
    if exc.code() == grpc.StatusCode.UNAVAILABLE:
        return CliError(f"cannot reach the server ({exc.details()}); is `closedloop serve` running?")
    return CliError(f"{exc.code().name}: {exc.details()}")


def _call(fn: Callable, *a: Any, **kw: Any) -> Any:
    try:
        return fn(*a, **kw)
    except grpc.RpcError as exc:
        raise _rpc_error(exc) from None


# --- alerts ---------------------------------------------------------------------------------------
def _parse_kv(items: list[str], kind: Callable[[str], Any], what: str) -> dict:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise CliError(f"--{what} expects key=value, got {item!r}")
        try:
            out[key] = kind(value)
        except ValueError:
            raise CliError(f"--{what} {key}: {value!r} is not a number") from None
    return out


def alerts_send(args) -> int:
    with _client(args) as c:
        try:
            alert = _call(c.create_alert, args.model_id, args.type, args.severity,
                          metrics=_parse_kv(args.metric, float, "metric"), labels=_parse_kv(args.label, str, "label"),
                          source=args.source)
        except ValueError as exc:
            raise CliError(str(exc)) from None
    if args.json:
        print(as_json(alert))
    else:
        print_alert_actions(alert)
    return 0


def alerts_list(args) -> int:
    with _client(args) as c:
        resp = _call(c.list_alerts, model_id=args.model_id or "", type=args.type or "", state=args.state,
                     page_size=args.limit)
    if args.json:
        print(as_json(resp))
        return 0
    table(["id", "observed", "model", "type", "severity", "state", "metrics", "actions"], [
        (a.id, ts(a.observe_time), a.model_id, a.type, enum_name(common_pb2.Severity, a.severity, "SEVERITY_"),
         enum_name(alert_pb2.AlertState, a.state, "ALERT_STATE_"),
         " ".join(f"{k}={v:g}" for k, v in sorted(a.metrics.items())),
         ", ".join(f"{x.rule}:{enum_name(alert_pb2.ActionState, x.state, 'ACTION_STATE_')}" for x in a.actions))
        for a in resp.alerts])
    return 0


# --- models ---------------------------------------------------------------------------------------
def models_register(args) -> int:
    path = pathlib.Path(args.file)
    try:
        spec = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CliError(f"{path}: {exc}") from None
    with _client(args) as c:
        try:
            model = _call(c.register_model, spec)
        except json_format.ParseError as exc:
            raise CliError(f"{path}: not a Model: {exc}") from None
    print(as_json(model) if args.json else f"registered {model.model_id} (current version {model.current_version})")
    return 0


def models_list(args) -> int:
    with _client(args) as c:
        resp = _call(c.list_models, page_size=args.limit)
    if args.json:
        print(as_json(resp))
        return 0
    table(["model", "enabled", "version", "estimator", "metric", "margin", "promoted"], [
        (m.model_id, "yes" if m.enabled else "no", m.current_version, m.training.estimator, m.training.metric,
         f"{m.training.promotion_margin:g}", ts(m.current_version_time)) for m in resp.models])
    return 0


def models_rollback(args) -> int:
    with _client(args) as c:
        model = _call(c.rollback_model, args.model_id, args.version, args.reason)
    print(as_json(model) if args.json else f"{model.model_id} is at version {model.current_version}")
    return 0


# --- jobs -----------------------------------------------------------------------------------------
def job_row(j: retrain_pb2.RetrainJob) -> tuple:
    return (j.id, j.model_id, enum_name(common_pb2.RetrainMode, j.mode, "RETRAIN_MODE_"),
            enum_name(common_pb2.Priority, j.priority, "PRIORITY_"),
            enum_name(retrain_pb2.JobState, j.state, "JOB_STATE_"), j.attempt, f"{j.progress:.0%}",
            fmt_metric(j.HasField("champion_metric"), j.champion_metric),
            fmt_metric(j.HasField("challenger_metric"), j.challenger_metric),
            "yes" if j.promoted else "no", j.trigger.rule or ("manual" if j.trigger.manual else "-"))


JOB_HEADERS = ["job", "model", "mode", "priority", "state", "attempt", "progress", "champion", "challenger",
               "promoted", "trigger"]


def jobs_list(args) -> int:
    with _client(args) as c:
        resp = _call(c.list_jobs, model_id=args.model_id or "", state=args.state, page_size=args.limit)
    if args.json:
        print(as_json(resp))
    else:
        table(JOB_HEADERS, [job_row(j) for j in resp.jobs])
    return 0


def watch(client: Client, job_id: str, out=None, json_lines: bool = False) -> retrain_pb2.RetrainJob:
    out = out or sys.stdout
    last = None
    tty = out.isatty() if hasattr(out, "isatty") else False
    try:
        for job in client.watch_job(job_id):
            last = job
            if json_lines:
                print(json_format.MessageToJson(job, indent=None), file=out)
                continue
            line = job_progress_line(job)
            print(("\r" + line.ljust(100)) if tty else line, end="" if tty else "\n", file=out, flush=True)
    except grpc.RpcError as exc:
        raise _rpc_error(exc) from None
    if tty:
        print(file=out)
    return last


def jobs_watch(args) -> int:
    with _client(args) as c:
        job = watch(c, args.job_id, json_lines=args.json)
    if job is not None and not args.json:
        print(f"champion {fmt_metric(job.HasField('champion_metric'), job.champion_metric)}  "
              f"challenger {fmt_metric(job.HasField('challenger_metric'), job.challenger_metric)}  "
              f"({job.metric})  trained version {job.trained_version or '-'}, "
              f"{'promoted' if job.promoted else 'not promoted'}; serving version {job.serving_version or '-'}"
              + (f"  error: {job.error}" if job.error else ""))
    return 0 if job is not None and job.state == retrain_pb2.JOB_STATE_SUCCEEDED else 1


def jobs_cancel(args) -> int:
    with _client(args) as c:
        job = _call(c.cancel_job, args.job_id)
    print(as_json(job) if args.json else f"job {job.id}: {enum_name(retrain_pb2.JobState, job.state, 'JOB_STATE_')}")
    return 0


def jobs_submit(args) -> int:
    with _client(args) as c:
        job = _call(c.submit_retrain, args.model_id, mode=args.mode, priority=args.priority, reason=args.reason)
    print(as_json(job) if args.json else f"job {job.id} {enum_name(retrain_pb2.JobState, job.state, 'JOB_STATE_')}")
    return 0


# --- rules (server side) --------------------------------------------------------------------------
NOTIFICATION_HEADERS = ["id", "target", "event", "state", "attempts", "last", "created", "summary"]


def _notification_state(n: notify_pb2.Notification) -> str:
    return enum_name(notify_pb2.NotificationState, n.state, "NOTIFICATION_STATE_")


def notifications_list(args) -> int:
    with _client(args) as c:
        resp = _call(c.list_notifications, state=args.state.upper() if args.state else None, page_size=args.limit)
    if args.json:
        print(as_json(resp))
    else:
        table(NOTIFICATION_HEADERS, [
            (n.id, n.target, n.event, _notification_state(n), n.attempts,
             n.last_error or (str(n.last_status) if n.last_status else "-"), ts(n.create_time), n.summary)
            for n in resp.notifications])
    return 0


def notifications_retry(args) -> int:
    with _client(args) as c:
        n = _call(c.retry_notification, args.notification_id)
    print(as_json(n) if args.json else f"notification {n.id} to {n.target}: {_notification_state(n)}, sending again")
    return 0


def _read_rules(path: str) -> tuple[str, str]:
    """(source, filename) to send: a rule file, or a folder's files joined exactly as the server joins
    its --rules folder (dsl/loader.py), with errors at their real files and lines."""
    try:
        tree = read_rule_tree(path)
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from None
    result = check_rule_tree(tree)
    if not result.ok:
        raise RuleCompileError([d for d in result.diagnostics if d.severity == "error"], tree.sources)
    return tree.source, tree.filename


def rules_apply(args) -> int:
    source, filename = _read_rules(args.path)
    with _client(args) as c:
        try:
            ruleset = c.apply_rules(source, filename, dry_run=args.dry_run)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                print(exc.details(), file=sys.stderr)
                return 1
            raise _rpc_error(exc) from None
    if args.json:
        print(as_json(ruleset))
    else:
        what = "checked (dry run)" if args.dry_run else f"active as version {ruleset.version}"
        print(f"{len(ruleset.rules)} rule(s) {what}")
        for d in ruleset.diagnostics:
            print(d.rendered, file=sys.stderr)
    return 0


def _parse_time(value: str) -> dt.datetime:
    if value.endswith(("d", "h", "m")) and value[:-1].isdigit():
        unit = {"d": "days", "h": "hours", "m": "minutes"}[value[-1]]
        return dt.datetime.now(dt.timezone.utc) - dt.timedelta(**{unit: int(value[:-1])})
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise CliError(f"cannot read {value!r} as a time (ISO 8601, or 7d / 12h / 30m ago)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def rules_backtest(args) -> int:
    source, filename = _read_rules(args.path)
    start = _parse_time(args.since)
    end = _parse_time(args.until) if args.until else dt.datetime.now(dt.timezone.utc)
    with _client(args) as c:
        report = _call(c.backtest_rules, source, start, end, filename=filename)
    if args.json:
        print(as_json(report))
        return 0
    print(f"{report.alerts} alert(s) replayed; active set (version {report.active.rule_set_version}) "
          f"queued {report.active.jobs} job(s), candidate would queue {report.candidate.jobs}")
    rules = sorted({r.rule for r in report.active.rules} | {r.rule for r in report.candidate.rules})
    act = {r.rule: r for r in report.active.rules}
    cand = {r.rule: r for r in report.candidate.rules}
    table(["rule", "active matches", "active retrains", "candidate matches", "candidate retrains"], [
        (r, act[r].matches if r in act else 0, act[r].retrains if r in act else 0,
         cand[r].matches if r in cand else 0, cand[r].retrains if r in cand else 0) for r in rules])
    print(f"\n{report.differences_total} alert(s) with a different outcome" + (":" if report.differences else ""))
    if report.differences:
        table(["alert", "model", "active", "candidate"],
              [(d.alert_id, d.model_id, d.active_outcome, d.candidate_outcome) for d in report.differences[:50]])
    return 0


# --- rules (local tooling from closedloop.dsl) ----------------------------------------------------
def rules_local(args) -> int:
    if args.rules_command == "check":
        return rule_tools.cmd_check(args.paths, sys.stdout)
    if args.rules_command == "fmt":
        return rule_tools.cmd_fmt(args.paths, write=args.write, check=args.check, out=sys.stdout)
    if args.rules_command == "test":
        return rule_tools.cmd_test(args.paths, sys.stdout)
    return rule_tools.cmd_explain(args.rules, args.alert, sys.stdout)


# --- feedback -------------------------------------------------------------------------------------
def feedback_report(args) -> int:
    start = _parse_time(args.since) if args.since else None
    with _client(args) as c:
        report = _call(c.feedback_report, model_id=args.model_id or "", rule=args.rule or "", start_time=start)
    if args.json:
        print(as_json(report))
    else:
        render_report(report, sys.stdout)
    return 0


# --- audit ----------------------------------------------------------------------------------------
AUDIT_HEADERS = ["time", "token", "method", "outcome", "request"]
AUDIT_REQUEST_CHARS = 80  # the table shows the start of each request; --json has all of it


def audit(args) -> int:
    if args.limit < 1:
        raise CliError("--limit must be at least 1")
    start = _parse_time(args.since) if args.since else None
    records, token = [], ""
    with _client(args) as c:
        while len(records) < args.limit:
            resp = _call(c.list_audit_records, start_time=start, page_size=min(args.limit - len(records), 1000),
                         page_token=token)
            records.extend(resp.records)
            token = resp.next_page_token
            if not token:
                break
    if args.json:
        print(json.dumps([json_format.MessageToDict(r, preserving_proto_field_name=True) for r in records], indent=2))
        return 0
    rows = []
    for r in records:
        request = json.dumps(json_format.MessageToDict(r.request), separators=(",", ":"))
        outcome = r.code if r.code == "OK" else f"{r.code}: {r.message}"
        rows.append([ts(r.time), r.token_name, r.method, outcome[:AUDIT_REQUEST_CHARS],
                     request[:AUDIT_REQUEST_CHARS]])
    table(AUDIT_HEADERS, rows)
    return 0
