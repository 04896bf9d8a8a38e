"""The commands that run the server or prepare for it: serve, migrate, token.

The server's modules are imported inside each command, so that the client commands (which only
talk to a server) start without loading the server, its database driver or the training stack.
"""

from __future__ import annotations

import argparse
import asyncio

from ..config import settings_from
from ..errors import ConfigError
from ..logging_setup import configure_logging


def serve_command(args: argparse.Namespace) -> int:
    from ..app import serve

    settings = settings_from(args)
    configure_logging(settings.log_format, settings.log_level)
    asyncio.run(serve(settings))
    return 0


def migrate_command(args: argparse.Namespace) -> int:
    from ..db.migrations import migrate
    from ..db.pool import command_connection

    settings = settings_from(args)
    configure_logging(settings.log_format, settings.log_level)

    async def run() -> None:
        async with command_connection(settings.database_url, settings.data_dir, settings.connect_timeout) as conn:
            report = await migrate(conn)
        applied = ", ".join(report.applied) or "none"
        print(f"migrations applied: {applied}; already applied before: {report.already}; "
              f"timescaledb: {'on' if report.timescale else 'not available (plain tables)'}")

    asyncio.run(run())
    return 0


def token_command(args: argparse.Namespace) -> int:
    from ..api.auth import ROLES, check_scopes, new_token_line

    roles = args.roles.split(",")
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise ConfigError(f"unknown role(s) {unknown}; roles are {', '.join(ROLES)}")
    models = [m for m in (args.models or "").split(",") if m]
    if args.models is not None:
        problems = check_scopes(models)
        if problems:
            raise ConfigError(f"--models: {problems[0]}")
    token, line = new_token_line(args.roles, args.name, models)
    print(f"token (give it to the client):      {token}")
    print(f"line for the --auth-tokens file:    {line}")
    return 0
