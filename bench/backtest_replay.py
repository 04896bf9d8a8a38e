"""CPU per alert of BacktestRules' replay: server/loop/backtest.run_backtest, the code the RPC runs
(keyset pages, prefetch, facts, matching, the decider), with the default rules, over the newest
--alerts alerts observed before --end in an existing database (bench/scale.py's full one).

    python bench/backtest_replay.py --database-url 'postgresql://postgres:@/closedloop_scale_full?host=...'
                                    [--alerts 1000000] [--end 2026-11-27T15:37:00+00:00]

Prints the process CPU time per alert (time.process_time: it survives a busy machine, where the wall
time does not) and the wall rate, and a digest of the report, so two versions of the code can be
compared on the same window: same digest = same report. Read-only: it only SELECTs.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import time

import asyncpg

from closedloop.dsl import compile_rules, load_default_rules
from closedloop.server.loop import backtest


async def main(args: argparse.Namespace) -> None:
    pool = await asyncpg.create_pool(args.database_url, min_size=1, max_size=2)
    try:
        end = dt.datetime.fromisoformat(args.end) if args.end else dt.datetime.now(dt.timezone.utc)
        start = await pool.fetchval(
            """SELECT observe_time FROM monitoring_alert_triggers WHERE observe_time < $2
                ORDER BY observe_time DESC OFFSET $1 LIMIT 1""", args.alerts - 1, end)
        if start is None:
            raise SystemExit(f"fewer than {args.alerts} alerts before {end}")
        rules = compile_rules(*load_default_rules())
        wall, cpu = time.perf_counter(), time.process_time()
        report = await backtest.run_backtest(pool, rules, start, end)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await pool.close()
    n = report.alerts
    print(f"window [{start.isoformat()}, {end.isoformat()}): {n:,} alerts, {report.differences_total:,} differences, "
          f"candidate jobs {report.candidate.jobs:,}; digest {hashlib.sha256(repr(report).encode()).hexdigest()[:16]}")
    print(f"RESULT cpu_us_per_alert={cpu / n * 1e6:.2f} alerts_per_cpu_s={n / cpu:.0f} alerts_per_s={n / wall:.0f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--database-url", required=True)
    ap.add_argument("--alerts", type=int, default=1_000_000)
    ap.add_argument("--end", default=None, help="ISO time the window ends at (default: now)")
    asyncio.run(main(ap.parse_args()))
