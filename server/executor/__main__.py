"""A stand-alone worker process: `python -m closedloop.server.executor --database-url URL`.

Runs a JobRunner (no gRPC server) until SIGTERM/SIGINT, then stops gracefully: jobs it holds go back
to the queue. Useful for a worker-only host next to ingest-only servers, and for the reliability
tests and the benchmark, which need several runner processes they can kill, stop and continue.
Prints "READY <worker id>" on stdout once it claims jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import pathlib
import signal
import sys

import structlog


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m closedloop.server.executor", description=__doc__.splitlines()[0])
    p.add_argument("--database-url", required=True)
    p.add_argument("--data-dir", type=pathlib.Path, default=None)
    p.add_argument("--work", choices=("train", "noop", "probe"), default="train",
                   help="what jobs do: train (real), noop/probe (benchmark and tests)")
    p.add_argument("--executor", choices=("local", "dask"), default="local")
    p.add_argument("--dask-scheduler", default=None)
    p.add_argument("--workers", type=int, default=2, help="worker processes (local) / slots")
    p.add_argument("--slots", type=int, default=None, help="concurrent jobs (default: --workers)")
    p.add_argument("--job-lease", type=float, default=30.0)
    p.add_argument("--job-timeout", type=float, default=3600.0)
    p.add_argument("--retry-base", type=float, default=2.0)
    p.add_argument("--poll-interval", type=float, default=2.0)
    p.add_argument("--log-level", default="info")
    return p.parse_args(argv)


async def _main(args: argparse.Namespace) -> None:
    from ..config import Settings
    from ..db.pool import create_pool
    from .runner import JobRunner
    from .job_kinds import kind_by_name

    overrides = {"data_dir": args.data_dir} if args.data_dir else {}
    settings = Settings(database_url=args.database_url, executor=args.executor, workers=args.workers,
                        dask_scheduler=args.dask_scheduler, job_lease=args.job_lease,
                        job_timeout=args.job_timeout, **overrides)
    slots = args.slots or args.workers
    pool = await create_pool(args.database_url, min_size=1, max_size=max(4, slots + 3))
    runner = JobRunner(settings, pool, args.database_url, slots=slots, retry_base_s=args.retry_base,
                       poll_interval_s=args.poll_interval,
                       kind=kind_by_name(args.work, data_dir=settings.data_dir, database_url=args.database_url))
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


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    level = getattr(logging, args.log_level.upper(), logging.INFO)
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso"),
                    structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
