"""Client commands of the CLI: alerts, models, jobs, rules, feedback — all through the public client.

Output is a readable table by default and JSON with --json. A server that is down or an argument
the server rejects prints one line (the status and its message) and exits 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pathlib
import sys
from typing import Any, Callable, Sequence

import grpc
from google.protobuf import json_format

from closedloop import Client
from closedloop.v1 import alert_pb2, common_pb2, retrain_pb2


class CliError(Exception):
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


def _json(message) -> str:
    return json_format.MessageToJson(message, preserving_proto_field_name=True, indent=2)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out=None) -> None:
    out = out or sys.stdout
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip(), file=out)
        if n == 0:
            print("  ".join("-" * w for w in widths), file=out)
    if not rows:
        print("(none)", file=out)


def enum_name(enum, value: int, prefix: str) -> str:
    return enum.Name(value).removeprefix(prefix).lower() if value else "-"


def ts(t) -> str:
    if t is None or (t.seconds == 0 and t.nanos == 0):
        return "-"
    return t.ToDatetime(tzinfo=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def fmt_metric(has: bool, value: float) -> str:
    return f"{value:.4f}" if has else "-"


def print_alert_actions(alert: alert_pb2.Alert, out=None) -> None:
    out = out or sys.stdout
    print(f"alert {alert.id}  model={alert.model_id}  type={alert.type}  "
          f"severity={enum_name(common_pb2.Severity, alert.severity, 'SEVERITY_')}  "
          f"state={enum_name(alert_pb2.AlertState, alert.state, 'ALERT_STATE_')}", file=out)
    table(["rule", "decision", "mode", "priority", "job", "reason"], [
        (a.rule, enum_name(alert_pb2.ActionState, a.state, "ACTION_STATE_"),
         enum_name(common_pb2.RetrainMode, a.mode, "RETRAIN_MODE_"),
         enum_name(common_pb2.Priority, a.priority, "PRIORITY_"), a.job_id or "-", a.reason)
        for a in alert.actions], out=out)


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
        print(_json(alert))
    else:
        print_alert_actions(alert)
    return 0


def alerts_list(args) -> int:
    with _client(args) as c:
        resp = _call(c.list_alerts, model_id=args.model_id or "", type=args.type or "", state=args.state,
                     page_size=args.limit)
    if args.json:
        print(_json(resp))
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
    print(_json(model) if args.json else f"registered {model.model_id} (current version {model.current_version})")
    return 0


def models_list(args) -> int:
    with _client(args) as c:
        resp = _call(c.list_models, page_size=args.limit)
    if args.json:
        print(_json(resp))
        return 0
    table(["model", "enabled", "version", "estimator", "metric", "margin", "promoted"], [
        (m.model_id, "yes" if m.enabled else "no", m.current_version, m.training.estimator, m.training.metric,
         f"{m.training.promotion_margin:g}", ts(m.current_version_time)) for m in resp.models])
    return 0


def models_rollback(args) -> int:
    with _client(args) as c:
        model = _call(c.rollback_model, args.model_id, args.version, args.reason)
    print(_json(model) if args.json else f"{model.model_id} is at version {model.current_version}")
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
        print(_json(resp))
    else:
        table(JOB_HEADERS, [job_row(j) for j in resp.jobs])
    return 0


def progress_bar(fraction: float, width: int = 30) -> str:
    done = int(round(max(0.0, min(1.0, fraction)) * width))
    return "[" + "#" * done + "-" * (width - done) + f"] {fraction:4.0%}"


def watch(client: Client, job_id: str, out=None, as_json: bool = False) -> retrain_pb2.RetrainJob:
    out = out or sys.stdout
    last = None
    tty = out.isatty() if hasattr(out, "isatty") else False
    try:
        for job in client.watch_job(job_id):
            last = job
            if as_json:
                print(json_format.MessageToJson(job, indent=None), file=out)
                continue
            state = enum_name(retrain_pb2.JobState, job.state, "JOB_STATE_")
            line = f"job {job.id} {progress_bar(job.progress)} {state:<9} {job.progress_message}"
            print(("\r" + line.ljust(100)) if tty else line, end="" if tty else "\n", file=out, flush=True)
    except grpc.RpcError as exc:
        raise _rpc_error(exc) from None
    if tty:
        print(file=out)
    return last


def jobs_watch(args) -> int:
    with _client(args) as c:
        job = watch(c, args.job_id, as_json=args.json)
    if job is not None and not args.json:
        print(f"champion {fmt_metric(job.HasField('champion_metric'), job.champion_metric)}  "
              f"challenger {fmt_metric(job.HasField('challenger_metric'), job.challenger_metric)}  "
              f"({job.metric})  promoted: {'yes, version ' + str(job.new_version) if job.promoted else 'no'}"
              + (f"  error: {job.error}" if job.error else ""))
    return 0 if job is not None and job.state == retrain_pb2.JOB_STATE_SUCCEEDED else 1


def jobs_cancel(args) -> int:
    with _client(args) as c:
        job = _call(c.cancel_job, args.job_id)
    print(_json(job) if args.json else f"job {job.id}: {enum_name(retrain_pb2.JobState, job.state, 'JOB_STATE_')}")
    return 0


def jobs_submit(args) -> int:
    with _client(args) as c:
        job = _call(c.submit_retrain, args.model_id, mode=args.mode, priority=args.priority, reason=args.reason)
    print(_json(job) if args.json else f"job {job.id} {enum_name(retrain_pb2.JobState, job.state, 'JOB_STATE_')}")
    return 0


# --- rules (server side) --------------------------------------------------------------------------
def _read_rules(path: str) -> tuple[str, str]:
    from .loop.rule_engine import read_rules_path

    try:
        return read_rules_path(pathlib.Path(path))
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror or exc}") from None


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
        print(_json(ruleset))
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
        print(_json(report))
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
    from closedloop.dsl import tools

    if args.rules_command == "check":
        return tools.cmd_check(args.paths, sys.stdout)
    if args.rules_command == "fmt":
        return tools.cmd_fmt(args.paths, write=args.write, check=args.check, out=sys.stdout)
    if args.rules_command == "test":
        return tools.cmd_test(args.paths, sys.stdout)
    return tools.cmd_explain(args.rules, args.alert, sys.stdout)


# --- feedback -------------------------------------------------------------------------------------
def feedback_report(args) -> int:
    from .feedback.render import render_report

    start = _parse_time(args.since) if args.since else None
    with _client(args) as c:
        report = _call(c.feedback_report, model_id=args.model_id or "", rule=args.rule or "", start_time=start)
    if args.json:
        print(_json(report))
    else:
        render_report(report, sys.stdout)
    return 0


def add_commands(sub) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--target", default=os.environ.get("CLOSEDLOOP_TARGET", "127.0.0.1:50051"),
                        help="server address (CLOSEDLOOP_TARGET)")
    common.add_argument("--token", default=os.environ.get("CLOSEDLOOP_TOKEN"), help="bearer token (CLOSEDLOOP_TOKEN)")
    common.add_argument("--timeout", type=float, default=10.0, help="seconds per call")
    common.add_argument("--json", action="store_true", help="JSON output for scripts")

    alerts = sub.add_parser("alerts", help="send and list alerts").add_subparsers(dest="alerts_command", required=True)
    p = alerts.add_parser("send", parents=[common], help="send one alert and show the decisions")
    p.add_argument("model_id")
    p.add_argument("type", help="drift, performance, age, risk, ...")
    p.add_argument("--severity", default="medium", help="low, medium, high, critical")
    p.add_argument("--metric", action="append", metavar="NAME=NUMBER")
    p.add_argument("--label", action="append", metavar="NAME=TEXT")
    p.add_argument("--source", default="closedloop-cli")
    p.set_defaults(func=alerts_send)
    p = alerts.add_parser("list", parents=[common], help="recent alerts, newest first")
    p.add_argument("--model-id")
    p.add_argument("--type")
    p.add_argument("--state")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=alerts_list)

    models = sub.add_parser("models", help="register and list models").add_subparsers(dest="models_command", required=True)
    p = models.add_parser("register", parents=[common], help="register or update a model from a JSON file")
    p.add_argument("file", help="a Model in JSON (see examples/model.json)")
    p.set_defaults(func=models_register)
    p = models.add_parser("list", parents=[common])
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(func=models_list)
    p = models.add_parser("rollback", parents=[common], help="return a model to an earlier version")
    p.add_argument("model_id")
    p.add_argument("--version", type=int, default=0, help="default: the version before the current")
    p.add_argument("--reason", default="rollback from the CLI")
    p.set_defaults(func=models_rollback)

    jobs = sub.add_parser("jobs", help="retraining jobs").add_subparsers(dest="jobs_command", required=True)
    p = jobs.add_parser("list", parents=[common])
    p.add_argument("--model-id")
    p.add_argument("--state")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=jobs_list)
    p = jobs.add_parser("watch", parents=[common], help="progress bar until the job ends")
    p.add_argument("job_id")
    p.set_defaults(func=jobs_watch)
    p = jobs.add_parser("cancel", parents=[common])
    p.add_argument("job_id")
    p.set_defaults(func=jobs_cancel)
    p = jobs.add_parser("submit", parents=[common], help="queue a manual retrain")
    p.add_argument("model_id")
    p.add_argument("--mode", default="full")
    p.add_argument("--priority", default="medium")
    p.add_argument("--reason", default="manual retrain from the CLI")
    p.set_defaults(func=jobs_submit)

    rules = sub.add_parser("rules", help="check, format, test, explain, apply and backtest rules")
    rsub = rules.add_subparsers(dest="rules_command", required=True)
    p = rsub.add_parser("check", help="diagnostics; exit 1 on any error")
    p.add_argument("paths", nargs="+")
    p.set_defaults(func=rules_local)
    p = rsub.add_parser("fmt", help="canonical formatting (prints; --write rewrites, --check exits 1 if not formatted)")
    p.add_argument("paths", nargs="+")
    p.add_argument("--write", action="store_true")
    p.add_argument("--check", action="store_true")
    p.set_defaults(func=rules_local)
    p = rsub.add_parser("test", help="run rule unit tests")
    p.add_argument("paths", nargs="+")
    p.set_defaults(func=rules_local)
    p = rsub.add_parser("explain", help="per rule and clause: true/false/missing for one alert")
    p.add_argument("rules")
    p.add_argument("alert", help="alert JSON file")
    p.set_defaults(func=rules_local)
    p = rsub.add_parser("apply", parents=[common], help="make a rule file the server's active set")
    p.add_argument("path")
    p.add_argument("--dry-run", action="store_true")
    p.set_defaults(func=rules_apply)
    p = rsub.add_parser("backtest", parents=[common], help="replay stored alerts through candidate rules")
    p.add_argument("path")
    p.add_argument("--since", default="7d", help="ISO time or 7d/12h/30m ago (default 7d)")
    p.add_argument("--until", help="ISO time (default now)")
    p.set_defaults(func=rules_backtest)

    feedback = sub.add_parser("feedback", help="did the loop's actions help?").add_subparsers(
        dest="feedback_command", required=True)
    p = feedback.add_parser("report", parents=[common])
    p.add_argument("--model-id")
    p.add_argument("--rule")
    p.add_argument("--since", help="ISO time or 30d ago (default 30d)")
    p.set_defaults(func=feedback_report)
