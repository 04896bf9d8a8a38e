"""The `closedloop` command: serve, migrate, demo, token, and the client commands (cli_client.py).

Errors a user can fix (bad flag, unreachable database, server down) print one line and exit
non-zero; tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from . import cli_client
from .config import add_arguments, settings_from
from closedloop.dsl import RuleCompileError

from .db.migrations import MigrationError
from .errors import ConfigError, StartupError


def _serve(args: argparse.Namespace) -> int:
    from .app import serve
    from .logging_setup import configure_logging

    settings = settings_from(args)
    configure_logging(settings.log_format, settings.log_level)
    asyncio.run(serve(settings))
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from .db.embedded import EmbeddedPostgres
    from .db.migrations import migrate
    from .db.pool import create_pool
    from .logging_setup import configure_logging

    settings = settings_from(args)
    configure_logging(settings.log_format, settings.log_level)

    async def run() -> None:
        embedded = None
        url = settings.database_url
        if url is None:
            embedded = EmbeddedPostgres(settings.data_dir)
            url = await embedded.start()
        try:
            pool = await create_pool(url, min_size=1, max_size=1, connect_timeout=settings.connect_timeout)
            try:
                async with pool.acquire() as conn:
                    report = await migrate(conn)
            finally:
                await pool.close()
        finally:
            if embedded is not None:
                await embedded.stop()
        applied = ", ".join(report.applied) or "none"
        print(f"migrations applied: {applied}; already applied before: {report.already}; "
              f"timescaledb: {'on' if report.timescale else 'not available (plain tables)'}")

    asyncio.run(run())
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(keep=args.keep, quiet=args.quiet)


def _token(args: argparse.Namespace) -> int:
    from .api.auth import ROLES, new_token_line

    roles = args.roles.split(",")
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise ConfigError(f"unknown role(s) {unknown}; roles are {', '.join(ROLES)}")
    token, line = new_token_line(args.roles, args.name)
    print(f"token (give it to the client):      {token}")
    print(f"line for the --auth-tokens file:    {line}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="closedloop", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the server (gRPC; embedded PostgreSQL unless --database-url)")
    add_arguments(serve)
    serve.set_defaults(func=_serve)

    migrate = sub.add_parser("migrate", help="apply database migrations and exit")
    add_arguments(migrate)
    migrate.set_defaults(func=_migrate)

    demo = sub.add_parser("demo", help="guided tour on a throwaway server and database")
    demo.add_argument("--keep", action="store_true", help="keep the temporary data folder")
    demo.add_argument("--quiet", action="store_true", help="only the final report")
    demo.set_defaults(func=_demo)

    token = sub.add_parser("token", help="make a bearer token and its hashed line for --auth-tokens")
    token.add_argument("roles", help="comma-separated: ingest, read, operator")
    token.add_argument("name", help="who holds the token (shown in logs)")
    token.set_defaults(func=_token)

    cli_client.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # gRPC core prints INFO lines (e.g. about fork handlers) unless told otherwise.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, StartupError, cli_client.CliError, MigrationError, RuleCompileError) as exc:
        print(f"closedloop: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
