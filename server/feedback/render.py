"""The feedback report as readable tables (the CLI and the demo)."""

from __future__ import annotations

from typing import TextIO

from closedloop.v1 import retrain_pb2


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


def _rows(groups, name_of):
    rows = []
    for g in groups:
        s = g.stats
        decisions = " ".join(f"{k.lower()}={v}" for k, v in sorted(s.actions_by_decision.items()))
        rows.append((name_of(g), s.triggers, decisions or "-", s.retrains, _pct(s.success_rate),
                     _pct(s.promotion_rate), f"{s.mean_improvement:+.4f}", f"{s.median_improvement:+.4f}",
                     _dur(s.mean_time_to_recovery), _pct(s.false_positive_rate),
                     f"{_pct(s.false_negative_rate)} of {s.evaluations_quiet}",
                     f"{s.helped}/{s.no_effect}/{s.harmed}"))
    return rows


HEADERS = ["triggers", "actions", "retrains", "success", "promoted", "mean impr", "median impr", "recovery",
           "FP rate", "FN rate", "helped/none/harmed"]


def render_report(report: retrain_pb2.FeedbackReport, out: TextIO) -> None:
    from ..cli_client import table, ts

    print(f"Feedback {ts(report.start_time)} .. {ts(report.end_time)} (UTC)\n", file=out)
    print("Per rule", file=out)
    table(["rule", *HEADERS], _rows(report.rules, lambda g: g.rule), out=out)
    print("\nPer model", file=out)
    table(["model", *HEADERS], _rows(report.models, lambda g: g.model_id), out=out)
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
