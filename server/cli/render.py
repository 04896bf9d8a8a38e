"""How the CLI and the demo show the server's messages as text: tables, enum names, times, the
progress bar, an alert's decisions and the feedback report.

Everything here takes closedloop.v1 messages as the client receives them and writes to a stream;
nothing talks to the server.
"""

from __future__ import annotations

import datetime as dt
import sys
from typing import Any, Sequence, TextIO

from google.protobuf import json_format

from closedloop.v1 import alert_pb2, common_pb2, retrain_pb2


def as_json(message) -> str:
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


def progress_bar(fraction: float, width: int = 30) -> str:
    done = int(round(max(0.0, min(1.0, fraction)) * width))
    return "[" + "#" * done + "-" * (width - done) + f"] {fraction:4.0%}"


def job_progress_line(job: retrain_pb2.RetrainJob) -> str:
    """One line of a watched job: id, progress bar, state and the trainer's message."""
    state = enum_name(retrain_pb2.JobState, job.state, "JOB_STATE_")
    return f"job {job.id} {progress_bar(job.progress)} {state:<9} {job.progress_message}"


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


# --- the feedback report ----------------------------------------------------------------------------
def _pct(x: float) -> str:
    return f"{x:.0%}"


def _dur(d) -> str:
    seconds = d.seconds + d.nanos / 1e9
    if seconds == 0:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _feedback_rows(groups, name_of):
    rows = []
    for g in groups:
        s = g.stats
        decisions = " ".join(f"{k.lower()}={v}" for k, v in sorted(s.actions_by_decision.items()))
        rows.append((name_of(g), s.triggers, decisions or "-", s.retrains, _pct(s.finished_rate),
                     _pct(s.promotion_rate), _pct(s.helped_rate), f"{s.mean_improvement:+.4f}",
                     f"{s.median_improvement:+.4f}",
                     _dur(s.mean_time_to_recovery), _pct(s.false_positive_rate),
                     f"{_pct(s.false_negative_rate)} of {s.evaluations_quiet}",
                     f"{s.helped}/{s.no_effect}/{s.harmed}"))
    return rows


FEEDBACK_HEADERS = ["triggers", "actions", "retrains", "finished", "promoted", "helped", "mean impr",
                    "median impr", "recovery", "FP rate", "FN rate", "helped/none/harmed"]


def render_report(report: retrain_pb2.FeedbackReport, out: TextIO) -> None:
    print(f"Feedback {ts(report.start_time)} .. {ts(report.end_time)} (UTC)\n", file=out)
    print("Per rule", file=out)
    table(["rule", *FEEDBACK_HEADERS], _feedback_rows(report.rules, lambda g: g.rule), out=out)
    print("\nPer model", file=out)
    table(["model", *FEEDBACK_HEADERS], _feedback_rows(report.models, lambda g: g.model_id), out=out)
    if report.manual.retrains:
        m = report.manual
        print(f"\nManual retrains: {m.retrains}, finished {m.succeeded}, promoted {m.promoted}", file=out)
    if report.suggestions:
        print("\nThreshold suggestions (not applied; check with `closedloop rules backtest`)", file=out)
        table(["rule", "threshold", "now", "suggested", "FP removed", "helpful kept", "why"], [
            (s.rule, f"{s.field} {s.operator}", f"{s.current_value:g}", f"{s.suggested_value:g}",
             s.false_positives_removed, s.helpful_retrains_kept, s.explanation) for s in report.suggestions], out=out)
    print("\nWhat the figures mean", file=out)
    for d in report.definitions:
        print(f"  {d.term}: {d.meaning}", file=out)
