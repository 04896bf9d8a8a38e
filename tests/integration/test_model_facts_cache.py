"""The model facts cache (loop/model_cache.py): the bulk refresh reads what the per-model read reads,
leaves no model for the alert path to read, never puts back what an invalidation dropped while it
ran, and an entry is used at most `ttl` seconds from when its read began."""

from __future__ import annotations

import pytest

from closedloop.server.loop import model_cache
from closedloop.server.loop.model_cache import FactsRefresher, ModelFactsCache
from closedloop.server.store import models as model_store

MODELS = [f"m{i}" for i in range(12)]


@pytest.fixture
async def registry(pool):
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO monitoring_retraining_integration (model_id, training, metric, enabled, current_version,
                                                              current_version_time)
               SELECT 'm' || i, '{}', 'accuracy', i % 4 <> 0, i % 3, now() - make_interval(days => i)
                 FROM generate_series(0, 11) i""")
        # Retrains: several per model, some failed (not a retrain for the facts), none for m0 and m1.
        await conn.execute(
            """INSERT INTO retrain_jobs (model_id, mode, priority, state, end_time)
               SELECT 'm' || (2 + i % 10), 'FULL', 3, CASE WHEN i % 3 = 0 THEN 'FAILED' ELSE 'SUCCEEDED' END,
                      now() - make_interval(hours => i)
                 FROM generate_series(0, 39) i""")
    return pool


async def test_the_bulk_refresh_reads_what_the_per_model_read_reads(registry):
    async with registry.acquire() as conn:
        by_name = {r["model_id"]: dict(r) for r in await model_store.model_facts(conn, [*MODELS, "unknown"])}
        first = await model_store.model_facts_page(conn, "", 5)
        pages = [first, await model_store.model_facts_page(conn, first[-1]["model_id"], 5)]
        everything = {r["model_id"]: dict(r) for r in await model_store.model_facts_page(conn, "", 100)}
    assert [r["model_id"] for r in pages[0]] == sorted(MODELS)[:5]
    assert [r["model_id"] for r in pages[1]] == sorted(MODELS)[5:10]
    assert by_name.keys() == everything.keys() == set(MODELS)
    for m in MODELS:
        a, b = by_name[m], everything[m]
        assert {k: v for k, v in a.items() if k != "db_now"} == {k: v for k, v in b.items() if k != "db_now"}
        assert (a["retrained_time"] is None) == (m in ("m0", "m1"))  # failed jobs are no retrain


async def test_after_a_refresh_no_alert_waits_for_a_facts_read(registry, monkeypatch):
    monkeypatch.setattr(model_cache, "REFRESH_PAGE", 5)  # three pages, the last one short
    cache = ModelFactsCache(registry)
    assert await FactsRefresher(cache).run_once() == len(MODELS)
    bulk = await cache.entries(MODELS)
    assert cache.misses == 0
    fresh = await ModelFactsCache(registry).entries(MODELS)  # every model read on the alert path
    assert bulk.keys() == fresh.keys()
    for m in MODELS:
        assert (bulk[m].enabled, bulk[m].version) == (fresh[m].enabled, fresh[m].version)
    # A model no refresh can know about (not registered) is read by name, and cached as unknown.
    assert (await cache.entries(["nobody"])) == {"nobody": None}
    assert cache.misses == 1
    await cache.entries(["nobody"])
    assert cache.misses == 1


async def test_a_model_dropped_during_a_refresh_is_not_put_back(registry, monkeypatch):
    cache = ModelFactsCache(registry)
    read = model_store.model_facts_page

    async def racing(conn, after, limit):
        rows = await read(conn, after, limit)
        cache.invalidate("m5")  # a NOTIFY arrives while the refresh's result is on its way
        return rows

    monkeypatch.setattr(model_store, "model_facts_page", racing)
    await cache.refresh_all()
    read = model_store.model_facts
    await cache.entries([m for m in MODELS if m != "m5"])
    assert cache.misses == 0
    got = await cache.entries(["m5"])
    assert cache.misses == 1 and got["m5"] is not None  # read again, on the alert's path

    # invalidate(None) while an alert's read runs: the alert gets what was read, the cache keeps none of it.
    async def clearing(conn, model_ids):
        rows = await read(conn, model_ids)
        cache.invalidate(None)
        return rows

    cache.invalidate("m3")
    cache.invalidate("m4")
    monkeypatch.setattr(model_store, "model_facts", clearing)
    got = await cache.entries(["m3", "m4"])
    assert got["m3"] is not None and got["m4"] is not None and cache.misses == 3
    monkeypatch.setattr(model_store, "model_facts", read)
    await cache.entries(["m3", "m6"])  # m6 was cached by the refresh, dropped by invalidate(None)
    assert cache.misses == 5


async def test_an_entry_is_used_for_ttl_seconds_from_when_its_read_began(registry, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(model_cache.time, "monotonic", lambda: clock[0])
    read = model_store.model_facts_page

    async def slow(conn, after, limit):
        clock[0] += 2.0  # the read takes two seconds
        return await read(conn, after, limit)

    monkeypatch.setattr(model_store, "model_facts_page", slow)
    cache = ModelFactsCache(registry, ttl=5.0)
    await cache.refresh_all()  # began at 1000, ended at 1002
    clock[0] = 1005.0
    await cache.entries(MODELS)
    assert cache.misses == 0
    clock[0] = 1005.1  # more than ttl after the read began: read again
    await cache.entries(["m1"])
    assert cache.misses == 1


def test_the_refresher_runs_twice_per_ttl(pool):
    assert FactsRefresher(ModelFactsCache(pool, ttl=5.0)).interval == 2.5


async def test_the_server_refreshes_every_model_from_its_start(registry, database_url, tmp_path, monkeypatch):
    import asyncio

    from closedloop.server.app import create_server

    from ..acceptance.conftest import make_settings

    refreshed = asyncio.Event()
    run_once = FactsRefresher.run_once

    async def watched(self):
        count = await run_once(self)
        refreshed.set()
        return count

    monkeypatch.setattr(FactsRefresher, "run_once", watched)
    srv, _port = await create_server(make_settings(database_url, tmp_path))
    try:
        await asyncio.wait_for(refreshed.wait(), 60)
        before = srv.facts.misses
        await srv.facts.entries(MODELS)
        assert srv.facts.misses == before
    finally:
        await srv.stop(grace=1.0)
