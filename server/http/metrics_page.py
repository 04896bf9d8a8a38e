"""GET /metrics: the process's own counters (metrics.REGISTRY) plus the database truths of a scrape.

Per scrape: one pool connection, the two cheap statements of store/stats.py, and the pool's own
figures. When the database does not answer, the scrape still succeeds with the process counters and
`closedloop_database_up 0`, so Prometheus tells "closedloop is down" apart from "its database is".
"""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily

from ..metrics import REGISTRY
from ..store import stats

log = structlog.get_logger(__name__)

# A scrape must not hang on a stuck database; Prometheus' own scrape timeout is 10 s by default.
DATABASE_TIMEOUT_S = 3.0


class _Scrape:
    """What generate_latest() renders: the registry's families, then this scrape's gauges."""

    def __init__(self, families: list) -> None:
        self.families = families

    def collect(self):
        yield from REGISTRY.collect()
        yield from self.families


class MetricsPage:
    def __init__(self, server) -> None:
        self.server = server  # app.ClosedLoopServer: pool and rules

    async def handle(self, request: web.Request) -> web.Response:
        families = await self.database_families()
        families += self.process_families()
        body = generate_latest(_Scrape(families))
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def database_families(self) -> list:
        up = GaugeMetricFamily("closedloop_database_up", "1 when this scrape could read the database.")
        try:
            async with asyncio.timeout(DATABASE_TIMEOUT_S):
                async with self.server.pool.acquire() as conn:
                    figures = await stats.scrape_figures(conn)
        except Exception as exc:  # noqa: BLE001 - a scrape reports the failure instead of failing
            log.warning("metrics.database_unavailable", error=str(exc) or type(exc).__name__)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        jobs = GaugeMetricFamily("closedloop_jobs", "Active jobs in the queue by state (all replicas).",
                                 labels=["state"])
        jobs.add_metric(["QUEUED"], figures.jobs_queued)
        jobs.add_metric(["RUNNING"], figures.jobs_running)
        oldest = GaugeMetricFamily("closedloop_job_oldest_runnable_seconds",
                                   "How long the oldest runnable queued job has waited (0: none waits).")
        oldest.add_metric([], figures.oldest_runnable_s)
        rows = GaugeMetricFamily("closedloop_table_rows_estimate",
                                 "Rows per table, the planner's estimate (pg_class.reltuples).", labels=["table"])
        for table, count in sorted(figures.table_rows.items()):
            rows.add_metric([table], count)
        return [up, jobs, oldest, rows]

    def process_families(self) -> list:
        pool = self.server.pool
        connections = GaugeMetricFamily("closedloop_db_pool_connections",
                                        "This process's database pool by state (in_use, idle, max).",
                                        labels=["state"])
        size, idle = pool.get_size(), pool.get_idle_size()
        connections.add_metric(["in_use"], size - idle)
        connections.add_metric(["idle"], idle)
        connections.add_metric(["max"], pool.get_max_size())
        active = self.server.rules.active if self.server.rules is not None else None
        version = GaugeMetricFamily("closedloop_rule_set_version", "Version of the active rule set (0: none).")
        version.add_metric([], active.version if active else 0)
        return [connections, version]
