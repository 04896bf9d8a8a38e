"""The `closedloop` command: serve, migrate, demo, token, and the client commands.

This module holds the argument tree and main(); the commands live in modules named for what they
hold: serve.py (serve, migrate, token), client_commands.py (alerts, models, jobs, rules, feedback,
audit through the public client), monitor_commands.py (monitor report/log, models profile), demo.py (the
guided tour), render.py (tables and text the client commands and the demo share).

Errors a user can fix (bad flag, unreachable database, server down) print one line and exit
non-zero; tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import os
import sys

from closedloop.dsl import RuleCompileError

from ..config import add_arguments
from ..errors import ConfigError, ServerError
from . import client_commands, monitor_commands, serve
from .demo import demo_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="closedloop", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the server (gRPC; embedded PostgreSQL unless --database-url)")
    add_arguments(p)
    p.set_defaults(func=serve.serve_command)

    p = sub.add_parser("migrate", help="apply database migrations and exit")
    add_arguments(p)
    p.set_defaults(func=serve.migrate_command)

    p = sub.add_parser("demo", help="guided tour on a throwaway server and database")
    p.add_argument("--keep", action="store_true", help="keep the temporary data folder")
    p.add_argument("--quiet", action="store_true", help="only the final report")
    p.set_defaults(func=demo_command)

    p = sub.add_parser("token", help="make a bearer token and its hashed line for --auth-tokens")
    p.add_argument("roles", help="comma-separated: ingest, read, operator")
    p.add_argument("name", help="who holds the token (shown in logs and the audit trail)")
    p.add_argument("--models", metavar="GLOB,...",
                   help="model scopes, e.g. 'fx-*,rates-*': the token only reaches matching model_ids "
                        "(default: every model)")
    p.set_defaults(func=serve.token_command)

    _add_client_commands(sub)
    return parser


def _add_client_commands(sub) -> None:
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
    p.set_defaults(func=client_commands.alerts_send)
    p = alerts.add_parser("list", parents=[common], help="recent alerts, newest first")
    p.add_argument("--model-id")
    p.add_argument("--type")
    p.add_argument("--state")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=client_commands.alerts_list)

    models = sub.add_parser("models", help="register and list models").add_subparsers(dest="models_command", required=True)
    p = models.add_parser("register", parents=[common], help="register or update a model from a JSON file")
    p.add_argument("file", help="a Model in JSON (see examples/model.json)")
    p.set_defaults(func=client_commands.models_register)
    p = models.add_parser("list", parents=[common])
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(func=client_commands.models_list)
    p = models.add_parser("rollback", parents=[common], help="return a model to an earlier version")
    p.add_argument("model_id")
    p.add_argument("--version", type=int, default=0, help="default: the version before the current")
    p.add_argument("--reason", default="rollback from the CLI")
    p.set_defaults(func=client_commands.models_rollback)

    p = models.add_parser("profile", help="build the reference profile of a version trained before monitoring "
                          "(reads its data source; run where the server runs)")
    p.add_argument("model_id")
    p.add_argument("--version", type=int, default=0, help="default: the current version")
    # The data-source settings too: the profile reads the version's data as the trainer did.
    add_arguments(p, only=("database_url", "data_dir", "connect_timeout", "data_sources", "data_root", "entry_point"))
    p.set_defaults(func=monitor_commands.models_profile)

    monitor = sub.add_parser("monitor", help="drift and performance monitoring").add_subparsers(
        dest="monitor_command", required=True)
    p = monitor.add_parser("report", parents=[common], help="recent windows, per-feature verdicts, sparklines")
    p.add_argument("model_id")
    p.add_argument("--version", type=int, default=0, help="only this version's windows")
    p.add_argument("--windows", type=int, default=20, help="closed windows to show (default 20)")
    p.set_defaults(func=monitor_commands.monitor_report)
    p = monitor.add_parser("log", parents=[common], help="replay a CSV or Parquet file of observations")
    p.add_argument("file")
    p.add_argument("--model", required=True)
    p.add_argument("--version", type=int, default=0, help="default: the model's current version")
    p.add_argument("--prediction-column", help="the column holding the model's predictions")
    p.add_argument("--time-column", help="the column holding each row's observe time")
    p.add_argument("--batch-rows", type=int, default=1000)
    p.set_defaults(func=monitor_commands.monitor_log)

    jobs = sub.add_parser("jobs", help="retraining jobs").add_subparsers(dest="jobs_command", required=True)
    p = jobs.add_parser("list", parents=[common])
    p.add_argument("--model-id")
    p.add_argument("--state")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=client_commands.jobs_list)
    p = jobs.add_parser("watch", parents=[common], help="progress bar until the job ends")
    p.add_argument("job_id")
    p.set_defaults(func=client_commands.jobs_watch)
    p = jobs.add_parser("cancel", parents=[common])
    p.add_argument("job_id")
    p.set_defaults(func=client_commands.jobs_cancel)
    p = jobs.add_parser("submit", parents=[common], help="queue a manual retrain")
    p.add_argument("model_id")
    p.add_argument("--mode", default="full")
    p.add_argument("--priority", default="medium")
    p.add_argument("--reason", default="manual retrain from the CLI")
    p.set_defaults(func=client_commands.jobs_submit)

    notifications = sub.add_parser("notifications", help="the notification outbox: see and resend").add_subparsers(
        dest="notifications_command", required=True)
    p = notifications.add_parser("list", parents=[common], help="newest first")
    p.add_argument("--state", choices=["pending", "delivered", "dead"], help="only this state")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=client_commands.notifications_list)
    p = notifications.add_parser("retry", parents=[common], help="send a notification again (e.g. a dead letter)")
    p.add_argument("notification_id")
    p.set_defaults(func=client_commands.notifications_retry)

    rules = sub.add_parser("rules", help="check, format, test, explain, apply and backtest rules")
    rsub = rules.add_subparsers(dest="rules_command", required=True)
    p = rsub.add_parser("check", help="diagnostics; exit 1 on any error")
    p.add_argument("paths", nargs="+")
    p.set_defaults(func=client_commands.rules_local)
    p = rsub.add_parser("fmt", help="canonical formatting (prints; --write rewrites, --check exits 1 if not formatted)")
    p.add_argument("paths", nargs="+")
    p.add_argument("--write", action="store_true")
    p.add_argument("--check", action="store_true")
    p.set_defaults(func=client_commands.rules_local)
    p = rsub.add_parser("test", help="run rule unit tests")
    p.add_argument("paths", nargs="+")
    p.set_defaults(func=client_commands.rules_local)
    p = rsub.add_parser("explain", help="per rule and clause: true/false/missing for one alert")
    p.add_argument("rules")
    p.add_argument("alert", help="alert JSON file")
    p.set_defaults(func=client_commands.rules_local)
    p = rsub.add_parser("apply", parents=[common], help="make a rule file the server's active set")
    p.add_argument("path")
    p.add_argument("--dry-run", action="store_true")
    p.set_defaults(func=client_commands.rules_apply)
    p = rsub.add_parser("backtest", parents=[common], help="replay stored alerts through candidate rules")
    p.add_argument("path")
    p.add_argument("--since", default="7d", help="ISO time or 7d/12h/30m ago (default 7d)")
    p.add_argument("--until", help="ISO time (default now)")
    p.set_defaults(func=client_commands.rules_backtest)

    feedback = sub.add_parser("feedback", help="did the loop's actions help?").add_subparsers(
        dest="feedback_command", required=True)
    p = feedback.add_parser("report", parents=[common])
    p.add_argument("--model-id")
    p.add_argument("--rule")
    p.add_argument("--since", help="ISO time or 30d ago (default 30d)")
    p.set_defaults(func=client_commands.feedback_report)

    p = sub.add_parser("audit", parents=[common],
                       help="the audit trail of operator actions, newest first (unscoped operator token)")
    p.add_argument("--since", help="ISO time or 1d/12h/30m ago (default: all)")
    p.add_argument("--limit", type=int, default=50, help="at most this many records (default 50)")
    p.set_defaults(func=client_commands.audit)


def main(argv: list[str] | None = None) -> int:
    # gRPC core prints INFO lines (e.g. about fork handlers) unless told otherwise.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ServerError, RuleCompileError) as exc:  # the server's own errors and the DSL's: one line each
        print(f"closedloop: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`closedloop rules check . | head -1`): stop quietly, and point stdout
        # at /dev/null so the interpreter's final flush does not raise again on the way out.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a writer killed by a closed pipe
