"""ListAlerts by state (store/alerts.list_alerts, migrations/0011): every state's pages, in keyset
order, over months whose newest rows are mostly of one state (bench/scale.py's shape: the last week
OPEN or ACKNOWLEDGED, everything older RESOLVED, some ACTIONED throughout), and the plan reads the
state's own partial index instead of the time index with a filter."""

from __future__ import annotations

import datetime as dt
import re

import asyncpg
import pytest

from closedloop.server.store import alerts as alert_store
from closedloop.server.store import partitions

STATES = sorted(alert_store.ALERT_STATES)


async def _fill(conn) -> None:
    """6,000 alerts over 120 days, two per observe_time (ties on the cursor's time)."""
    now = await conn.fetchval("SELECT date_trunc('second', now())")
    await partitions.ensure_months(conn, now - dt.timedelta(days=121), now)
    await conn.execute(
        """INSERT INTO monitoring_alert_triggers (model_id, alert_type, severity, observe_time, state)
           SELECT 'm' || (i % 50), 'drift', 1, $1::timestamptz - make_interval(mins => (i / 2) * 57),
                  CASE WHEN i % 6 = 0 THEN 'ACTIONED'
                       WHEN i % 997 = 0 THEN 'SUPPRESSED'
                       WHEN (i / 2) * 57 < 7 * 1440 THEN (CASE WHEN i % 5 = 0 THEN 'ACKNOWLEDGED' ELSE 'OPEN' END)
                       ELSE 'RESOLVED' END
             FROM generate_series(0, 5999) i""", now)
    await conn.execute("ANALYZE monitoring_alert_triggers")


async def _pages(conn, state: str, size: int) -> list[list[tuple]]:
    pages, after = [], None
    while True:
        rows = await alert_store.list_alerts(conn, model_id=None, alert_type=None, state=state, start=None,
                                             end=None, after=after, limit=size + 1)
        pages.append([(r["observe_time"], r["id"]) for r in rows[:size]])
        if len(rows) <= size:
            return pages
        after = pages[-1][-1]


async def test_every_state_pages_in_keyset_order(database_url):
    conn = await asyncpg.connect(database_url)
    try:
        await _fill(conn)
        everything = await conn.fetch("SELECT id, observe_time, state FROM monitoring_alert_triggers")
        for state in STATES:
            want = sorted(((r["observe_time"], r["id"]) for r in everything if r["state"] == state), reverse=True)
            assert want, state  # the data has every state
            pages = await _pages(conn, state, 97)
            assert [row for page in pages for row in page] == want, state
            assert all(len(page) == 97 for page in pages[:-1])
    finally:
        await conn.close()


async def _plan(conn, state: str, after) -> str:
    class Explain:
        async def fetch(self, sql, *args):
            self.text = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, *args))
            return []

    explain = Explain()
    await alert_store.list_alerts(explain, model_id=None, alert_type=None, state=state, start=None, end=None,
                                  after=after, limit=51)
    return explain.text


async def test_each_state_reads_its_partial_index(database_url):
    conn = await asyncpg.connect(database_url)
    try:
        await _fill(conn)
        newest = await conn.fetchrow("SELECT observe_time, id FROM monitoring_alert_triggers "
                                     "ORDER BY observe_time DESC, id DESC LIMIT 1")
        for state in STATES:
            # The state's index on every month: the children of its index on the partitioned table.
            own = {r[0] for r in await conn.fetch(
                """SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                    WHERE i.inhparent = $1::regclass""", f"monitoring_alert_triggers_{state.lower()}_time")}
            assert own, state
            for after in (None, (newest["observe_time"], newest["id"])):
                plan = await _plan(conn, state, after)
                # Small months may be read whole (a sequential scan and a sort): what matters is
                # that no other index (the time index with a state filter) is read.
                used = set(re.findall(r"Index (?:Only )?Scan(?: Backward)? using (\S+)", plan))
                used |= set(re.findall(r"Bitmap Index Scan on (\S+)", plan))
                assert used and used <= own, (state, plan)
    finally:
        await conn.close()


def test_an_unknown_state_is_refused_before_any_sql():
    with pytest.raises(ValueError, match="unknown alert state"):
        import asyncio

        asyncio.run(alert_store.list_alerts(None, model_id=None, alert_type=None, state="x' OR true --",
                                            start=None, end=None, after=None, limit=1))
