"""`closedloop demo`: the whole loop on a throwaway server, narrated.

Starts a server on an embedded PostgreSQL in a temporary folder, registers a model on the built-in
synthetic market data, trains version 1, lets the market drift, sends the alerts a trading service
would send, shows which rules fired and why, watches the retrain, compares champion and challenger,
then lets a second model stream its features so that closedloop notices a drift on its own, and
prints the feedback report. It ends by printing the web console's URL and, on a terminal (not in
CI), keeps the server up until Enter is pressed so the loop can be looked at in a browser.
Everything it started is stopped and the folder removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from closedloop import AsyncClient, observation_batch
from closedloop.v1 import alert_pb2, common_pb2, retrain_pb2, rules_pb2

from .render import enum_name, job_progress_line, print_alert_actions, render_report

MODEL_ID = "fx-eurusd-demo"
MODEL = {
    "model_id": MODEL_ID, "enabled": True,
    "training": {
        "estimator": "linear_model.SGDClassifier",
        "params": {"loss": "log_loss", "alpha": 0.0005, "random_state": 0},
        "synthetic": {"seed": 11, "drift": 0.9, "rows": 3000},
        "target": "direction", "metric": "accuracy", "holdout_fraction": 0.25, "promotion_margin": 0.002,
    },
}


WATCHED_ID = "fx-usdjpy-demo"
WATCHED = {**MODEL, "model_id": WATCHED_ID, "monitoring": {"window_rows": "2000", "min_rows": "500"}}
DRIFTING = ("order_flow", "sentiment", "carry")


class Narrator:
    def __init__(self, out, quiet: bool) -> None:
        self.out = out
        self.quiet = quiet
        self.started = time.perf_counter()

    def step(self, text: str) -> None:
        if not self.quiet:
            print(f"\n[{time.perf_counter() - self.started:5.1f}s] {text}", file=self.out, flush=True)

    def say(self, text: str = "") -> None:
        if not self.quiet:
            print(text, file=self.out, flush=True)


async def _watch(client: AsyncClient, job_id: str, n: Narrator) -> retrain_pb2.RetrainJob:
    last = None
    async for job in client.watch_job(job_id):
        last = job
        n.say(f"    {job_progress_line(job)}")
    return last


def _scores(job: retrain_pb2.RetrainJob) -> str:
    champion = f"{job.champion_metric:.4f}" if job.HasField("champion_metric") else "none (first version)"
    challenger = f"{job.challenger_metric:.4f}" if job.HasField("challenger_metric") else "-"
    verdict = f"promoted as version {job.trained_version}" if job.promoted else "not promoted (champion kept)"
    return f"    {job.metric}: champion {champion}  challenger {challenger}  -> {verdict}"


def _actions(alert: alert_pb2.Alert, n: Narrator) -> None:
    if not n.quiet:
        print_alert_actions(alert, n.out)


async def _tour(target: str, n: Narrator) -> None:
    async with AsyncClient(target, timeout=60) as client:
        rules = await client.get_rule_set()
        n.step(f"Active rules (version {rules.version}, the bundled defaults):")
        for r in rules.rules:
            a = r.actions[0]
            n.say(f"    {r.name:<26} when {r.condition}  ->  retrain "
                  f"{enum_name(common_pb2.RetrainMode, a.mode, 'RETRAIN_MODE_')} priority "
                  f"{enum_name(common_pb2.Priority, a.priority, 'PRIORITY_')}")

        n.step(f"Registering {MODEL_ID}: SGD classifier on synthetic EUR/USD bars (regime-switching, drifting)")
        await client.register_model(MODEL)
        job = await client.submit_retrain(MODEL_ID, mode="full", priority="high", reason="initial training")
        n.say(f"    training version 1 (job {job.id})")
        job = await _watch(client, job.id, n)
        n.say(_scores(job))

        n.step("The market drifts. The trading service's monitors send what they see:")
        low = await client.create_alert(MODEL_ID, "performance", "low", metrics={"performance_drop": 0.04},
                                        source="pnl-monitor")
        _actions(low, n)
        n.say("    (a low-severity performance alert triggers nothing)")
        risk = await client.create_alert(MODEL_ID, "risk", "medium", metrics={"risk_score": 55}, source="risk-engine")
        _actions(risk, n)
        drift = await client.create_alert(MODEL_ID, "drift", "high", metrics={"drift_score": 0.41, "psi": 0.33},
                                          labels={"desk": "fx"}, source="drift-monitor")
        _actions(drift, n)

        n.step("Why the drift rule fired (EvaluateRules, clause by clause):")
        explained = await client.evaluate_rules(drift)
        for e in explained.evaluations:
            if e.matched or e.rule == "risk_auto_retrain":
                clauses = ", ".join(f"{c.text} = {rules_pb2.ClauseValue.Name(c.value).removeprefix('CLAUSE_VALUE_').lower()}"
                                    for c in e.clauses)
                n.say(f"    {e.rule}: {'MATCH' if e.matched else 'no match'}  ({clauses})")

        job_id = next(a.job_id for a in drift.actions if a.job_id)
        n.step(f"Watching the retrain the drift alert queued (job {job_id}):")
        job = await _watch(client, job_id, n)
        n.say(_scores(job))

        n.step("The drift monitor fires again; the rule's cooldown holds it back:")
        again = await client.create_alert(MODEL_ID, "drift", "high", metrics={"drift_score": 0.38},
                                          source="drift-monitor")
        _actions(again, n)

        n.step("A critical risk breach: retrain at critical priority (its own rule and cooldown):")
        breach = await client.create_alert(MODEL_ID, "risk", "critical", metrics={"risk_score": 91},
                                           source="risk-engine")
        _actions(breach, n)
        job_id = next(a.job_id for a in breach.actions if a.job_id)
        job = await _watch(client, job_id, n)
        n.say(_scores(job))

        await _monitoring_stage(client, n)

        n.step("Feedback report:")
        report = await client.feedback_report()
        render_report(report, n.out)


async def _monitoring_stage(client: AsyncClient, n: Narrator) -> None:
    """A second model streams its features to MonitorService; the market drifts; closedloop notices on
    its own, raises the drift alert itself, retrains, and judges the next windows against the new version."""
    import numpy as np  # loaded for this stage only: the CLI starts without the numeric stack

    from .monitor_commands import render_drift_report

    n.step(f"Monitoring: {WATCHED_ID} streams the features it sees to closedloop (MonitorService)")
    await client.register_model(WATCHED)
    job = await client.submit_retrain(WATCHED_ID, mode="full", priority="high", reason="initial training")
    job = await _watch(client, job.id, n)
    n.say(_scores(job) + "; the trainer stored the version's reference profile")
    rng = np.random.default_rng(5)

    async def stream(version: int, rows: int, shift: float = 0.0) -> None:
        columns = _market_sample(version, rows, rng, shift)
        await client.log_observations([observation_batch(WATCHED_ID, {c: v[i:i + 500] for c, v in columns.items()})
                                       for i in range(0, rows, 500)])

    await stream(1, 4000)
    n.say("    4,000 rows like the training data: two windows of 2,000, both quiet")
    n.step(f"The market moves ({', '.join(DRIFTING)} shift by a training std); nobody sends an alert:")
    await stream(1, 2000, shift=1.0)
    report = await client.drift_report(WATCHED_ID)
    alert = await client.get_alert(report.windows[0].alert_id)
    n.say(f"    closedloop raised it itself: {alert.type} alert from {alert.source}, drift_score "
          f"{alert.metrics['drift_score']:.2f}, drifted {alert.labels['drifted_features']}")
    _actions(alert, n)
    job_id = next(a.job_id for a in alert.actions if a.job_id)
    job = await _watch(client, job_id, n)
    n.say(_scores(job))
    if job.promoted:
        await asyncio.sleep(1.5)  # replicas re-read the current version within a second
        await stream(job.new_version, 2000)
        n.say(f"    the next window counts for version {job.new_version}, judged against its own training data "
              "(no alert):")
    if not n.quiet:
        render_drift_report(await client.drift_report(WATCHED_ID), n.out)


def _market_sample(version: int, rows: int, rng, shift: float) -> dict:
    """Rows drawn from the market `version` was trained on, some features shifted by `shift` stds."""
    from ..executor.trainer import load_training_window

    X, _, _, n_train = load_training_window(WATCHED["training"], version - 1)
    train = X.iloc[:n_train]
    picked = train.iloc[rng.integers(0, n_train, rows)]
    return {c: picked[c].to_numpy(dtype=float) + (shift * train[c].std() if c in DRIFTING else 0.0)
            for c in train.columns}


def _interactive() -> bool:
    """A person at a terminal who can press Enter (not CI, not a pipe)."""
    return sys.stdin.isatty() and sys.stdout.isatty() and not os.environ.get("CI")


async def _show_console(server, n: Narrator) -> None:
    """The console on the throwaway server's HTTP side; on a terminal, kept up until Enter is pressed."""
    n.step(f"The web console shows all of this: http://127.0.0.1:{server.http.port}/")
    if _interactive() and not n.quiet:
        n.say("    Press Enter to stop the server and remove the demo's data.")
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    else:
        n.say("    (not on a terminal: stopping now; run `closedloop demo` in a terminal to keep it up)")


def run_demo(keep: bool = False, quiet: bool = False, out=None) -> int:
    """Run the tour; returns the exit code. Leaves nothing running and nothing on disk (unless keep)."""
    from ..app import create_server
    from ..config import Settings
    from ..logging_setup import configure_logging

    out = out or sys.stdout
    n = Narrator(out, quiet)
    folder = Path(tempfile.mkdtemp(prefix="closedloop-demo-"))
    configure_logging("json", "error")

    async def main() -> None:
        settings = Settings(data_dir=folder, listen="127.0.0.1:0", http_listen="127.0.0.1:0", workers=2,
                            age_sweep_interval=0, log_format="json", log_level="error", shutdown_grace=2.0)
        n.step(f"Starting closedloop on a throwaway embedded PostgreSQL in {folder}")
        server, port = await create_server(settings)
        try:
            n.say(f"    gRPC on 127.0.0.1:{port}, 2 training processes")
            await _tour(f"127.0.0.1:{port}", n)
            await _show_console(server, n)
        finally:
            # Stop before saying so: if the output is gone (a closed pipe), the cleanup still runs.
            await server.stop(2)
        n.step("Stopped the server and the embedded database")

    try:
        asyncio.run(main())
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
    n.step("Done." + (f" Data kept in {folder}" if keep else " Temporary data removed."))
    return 0


def demo_command(args: argparse.Namespace) -> int:
    return run_demo(keep=args.keep, quiet=args.quiet)
