"""A stand-alone worker process: `python -m closedloop.server.executor --database-url URL`.

Runs a JobRunner (no gRPC server) until SIGTERM/SIGINT, then stops gracefully: jobs it holds go back
to the queue. Useful for a worker-only host next to ingest-only servers, and for the reliability
tests, which need several runner processes they can kill, stop and continue.
Prints "READY <worker id>" on stdout once it claims jobs.

Its settings come from server/config.py like the server's: the same flags, CLOSEDLOOP_* variables
and defaults for the options it uses (WORKER_SETTINGS), and the same logging setup. The few flags
below them (--work, --slots, --retry-base, --poll-interval) are knobs of this process alone.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from ..config import Settings, add_arguments, settings_from
from ..errors import ConfigError, StartupError
from ..logging_setup import configure_logging

# The Settings fields a worker process uses (README, Configuration, describes each).
WORKER_SETTINGS = ("database_url", "data_dir", "executor", "workers", "dask_scheduler", "job_lease",
                   "job_timeout", "log_format", "log_level", "connect_timeout", "data_sources", "data_root",
                   "entry_point", "config")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m closedloop.server.executor", description=__doc__.splitlines()[0])
    add_arguments(p, only=WORKER_SETTINGS)
    p.add_argument("--work", choices=("train", "noop", "probe"), default="train",
                   help="what jobs do: train (real), noop/probe (benchmark and tests)")
    p.add_argument("--slots", type=int, default=None, help="concurrent jobs (default: --workers)")
    p.add_argument("--retry-base", type=float, default=2.0,
                   help="seconds: base of a failed job's retry backoff (doubles per attempt)")
    p.add_argument("--poll-interval", type=float, default=2.0,
                   help="longest wait in seconds between claims when no NOTIFY arrives")
    return p.parse_args(argv)


def worker_settings(args: argparse.Namespace) -> Settings:
    settings = settings_from(args)
    if settings.database_url is None:
        # The server's embedded PostgreSQL is private to it; a worker must share a real one.
        raise ConfigError("a worker process needs --database-url (or CLOSEDLOOP_DATABASE_URL): "
                          "the PostgreSQL that holds the job queue")
    return settings


async def _main(settings: Settings, args: argparse.Namespace) -> None:
    from ..db.pool import create_pool
    from .runner import JobRunner
    from .job_kinds import kind_by_name
    from .source_config import DataSources

    url = settings.database_url
    slots = args.slots or settings.workers
    pool = await create_pool(url, min_size=1, max_size=max(4, slots + 3), connect_timeout=settings.connect_timeout)
    runner = JobRunner(settings, pool, url, slots=slots, retry_base_s=args.retry_base,
                       poll_interval_s=args.poll_interval,
                       kind=kind_by_name(args.work, data_dir=settings.data_dir, database_url=url,
                                         sources=DataSources.from_settings(settings)))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await runner.start()
        print(f"READY {runner.worker_id}", flush=True)
        await stop.wait()
    finally:
        await runner.stop()
        await pool.close()


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        settings = worker_settings(args)
        configure_logging(settings.log_format, settings.log_level)
        asyncio.run(_main(settings, args))
    except (ConfigError, StartupError) as exc:
        print(f"closedloop worker: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
