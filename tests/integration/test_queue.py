"""The retrain_jobs queue's SQL against a real PostgreSQL: enqueue/coalesce, claim order, leases,
fencing, retries, cancellation, rescue, and concurrency across connections."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from closedloop.server.store import queue


async def register(conn, model_id: str = "m1") -> str:
    await conn.execute(
        """INSERT INTO monitoring_retraining_integration (model_id, training, metric)
           VALUES ($1, '{}'::jsonb, 'accuracy') ON CONFLICT DO NOTHING""",
        model_id,
    )
    return model_id


async def test_enqueue_creates_then_coalesces(pool):
    async with pool.acquire() as conn:
        await register(conn)
        job, created = await queue.enqueue(conn, model_id="m1", mode="INCREMENTAL", priority=1, reason="first")
        assert created and job["state"] == "QUEUED" and job["attempt"] == 0
        again, created2 = await queue.enqueue(conn, model_id="m1", mode="FULL", priority=3, trigger_rule="r")
        assert not created2 and again["id"] == job["id"]
        assert again["mode"] == "FULL" and again["priority"] == 3 and again["coalesced_triggers"] == 1
        # A lower priority never lowers it; an incremental request never downgrades a full job.
        third, _ = await queue.enqueue(conn, model_id="m1", mode="INCREMENTAL", priority=2)
        assert third["priority"] == 3 and third["mode"] == "FULL" and third["coalesced_triggers"] == 2


async def test_running_job_keeps_its_mode_when_coalesced(pool):
    async with pool.acquire() as conn:
        await register(conn)
        job, _ = await queue.enqueue(conn, model_id="m1", mode="INCREMENTAL", priority=1)
        [claimed] = await queue.claim(conn, worker="w", lease_s=30)
        again, created = await queue.enqueue(conn, model_id="m1", mode="FULL", priority=4)
        assert not created and again["id"] == job["id"]
        assert again["mode"] == "INCREMENTAL" and again["priority"] == 4 and again["state"] == "RUNNING"


async def test_request_id_returns_the_same_job_even_when_coalesced(pool):
    async with pool.acquire() as conn:
        await register(conn)
        first, _ = await queue.enqueue(conn, model_id="m1", mode="FULL", priority=2, request_id="a")
        second, created = await queue.enqueue(conn, model_id="m1", mode="FULL", priority=2, request_id="b")
        assert not created and second["coalesced_triggers"] == 1
        retry, created = await queue.enqueue(conn, model_id="m1", mode="FULL", priority=2, request_id="b")
        assert not created and retry["id"] == first["id"]
        # A retry of a request changes nothing: it was counted once.
        assert retry["coalesced_triggers"] == 1


async def test_concurrent_enqueues_make_one_job(pool):
    async with pool.acquire() as conn:
        await register(conn)

    async def one(i: int):
        async with pool.acquire() as conn:
            async with conn.transaction():
                return await queue.enqueue(conn, model_id="m1", mode="FULL", priority=1 + i % 4)

    results = await asyncio.gather(*(one(i) for i in range(16)))
    assert sum(created for _, created in results) == 1
    assert len({job["id"] for job, _ in results}) == 1
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT count(*) AS n, max(priority) AS p, max(coalesced_triggers) AS c FROM retrain_jobs")
    assert row["n"] == 1 and row["p"] == 4 and row["c"] == 15


async def test_concurrent_duplicate_request_ids(pool):
    async with pool.acquire() as conn:
        await register(conn)

    async def one():
        async with pool.acquire() as conn:
            async with conn.transaction():
                job, _ = await queue.enqueue(conn, model_id="m1", mode="FULL", priority=2, request_id="same")
                await asyncio.sleep(0.05)
                return job["id"]

    ids = await asyncio.gather(*(one() for _ in range(6)))
    assert len(set(ids)) == 1
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT max(coalesced_triggers) FROM retrain_jobs") == 0


async def test_enqueue_notifies_at_commit(pool, database_url):
    got: asyncio.Queue = asyncio.Queue()
    listener = await asyncpg.connect(database_url)
    await listener.add_listener(queue.JOBS_CHANNEL, lambda *a: got.put_nowait(a[-1]))
    try:
        async with pool.acquire() as conn:
            await register(conn)
            async with conn.transaction():
                job, _ = await queue.enqueue(conn, model_id="m1", mode="FULL", priority=2)
                await asyncio.sleep(0.1)
                assert got.empty()  # not before commit
        assert await asyncio.wait_for(got.get(), 5) == str(job["id"])
    finally:
        await listener.close()


async def test_claim_order_priority_then_age_and_run_after(pool):
    async with pool.acquire() as conn:
        ids = {}
        for name, prio in [("a", 1), ("b", 4), ("c", 2), ("d", 4)]:
            await register(conn, name)
            job, _ = await queue.enqueue(conn, model_id=name, mode="FULL", priority=prio)
            ids[name] = job["id"]
        await conn.execute("UPDATE retrain_jobs SET run_after = now() + interval '1 hour' WHERE id = $1", ids["c"])
        first = await queue.claim(conn, worker="w", lease_s=30, limit=2)
        assert [r["model_id"] for r in first] == ["b", "d"]
        rest = await queue.claim(conn, worker="w", lease_s=30, limit=10)
        assert [r["model_id"] for r in rest] == ["a"]  # c is waiting for its retry time
        assert all(r["attempt"] == 1 and r["lease_token"] is not None for r in first + rest)
        assert 3500 < await queue.next_run_after(conn) <= 3600


async def test_concurrent_claimers_never_share_a_job(pool):
    async with pool.acquire() as conn:
        for i in range(40):
            await register(conn, f"m{i}")
            await queue.enqueue(conn, model_id=f"m{i}", mode="FULL", priority=1 + i % 4)

    async def claimer(w: int):
        got = []
        while True:
            async with pool.acquire() as conn:
                rows = await queue.claim(conn, worker=f"w{w}", lease_s=30, limit=3)
            if not rows:
                return got
            got += [r["id"] for r in rows]

    results = await asyncio.gather(*(claimer(w) for w in range(6)))
    every = [i for r in results for i in r]
    assert len(every) == 40 and len(set(every)) == 40


async def test_completion_is_fenced_by_the_lease(pool):
    async with pool.acquire() as conn:
        await register(conn)
        await queue.enqueue(conn, model_id="m1", mode="FULL", priority=2)
        [job] = await queue.claim(conn, worker="late", lease_s=0.01)
        await asyncio.sleep(0.05)
        rescued = await queue.rescue_expired(conn)
        assert [r["state"] for r in rescued] == ["QUEUED"] and "lease expired" in rescued[0]["error"]
        [again] = await queue.claim(conn, worker="fresh", lease_s=30)
        assert again["attempt"] == 2 and again["lease_token"] != job["lease_token"]
        old = str(job["lease_token"])
        assert await queue.complete(conn, job["id"], old, promoted=True, new_version=9) is None
        assert await queue.fail(conn, job["id"], old, "late", retry_base_s=1, retry_cap_s=1) is None
        assert await queue.release(conn, job["id"], old) is None
        assert await queue.report_progress(conn, job["id"], old, 0.5, "late") is False
        assert await queue.heartbeat(conn, [(job["id"], old)], 30) == {}
        done = await queue.complete(conn, job["id"], str(again["lease_token"]), new_version=1)
        assert done["state"] == "SUCCEEDED" and done["new_version"] == 1 and done["worker"] == "fresh"


async def test_fail_backs_off_then_fails(pool):
    async with pool.acquire() as conn:
        await register(conn)
        await queue.enqueue(conn, model_id="m1", mode="FULL", priority=2, max_attempts=4)
        delays = []
        for attempt in range(1, 5):
            await conn.execute("UPDATE retrain_jobs SET run_after = now()")
            [job] = await queue.claim(conn, worker="w", lease_s=30)
            assert job["attempt"] == attempt
            row = await queue.fail(conn, job["id"], str(job["lease_token"]), f"boom {attempt}",
                                   retry_base_s=10, retry_cap_s=1000)
            delays.append(row["retry_in_s"])
        assert row["state"] == "FAILED" and row["error"] == "boom 4" and row["end_time"] is not None
        # Equal jitter: the n-th delay lies in [d/2, d] with d = 10 * 2^(n-1).
        for n, d in enumerate(delays[:3], start=1):
            assert 10 * 2 ** (n - 1) / 2 - 0.1 <= d <= 10 * 2 ** (n - 1) + 0.1
        assert delays[0] <= delays[1] <= delays[2]


async def test_permanent_failure_skips_retries(pool):
    async with pool.acquire() as conn:
        await register(conn)
        await queue.enqueue(conn, model_id="m1", mode="FULL", priority=2)
        [job] = await queue.claim(conn, worker="w", lease_s=30)
        row = await queue.fail(conn, job["id"], str(job["lease_token"]), "bad spec", retry_base_s=1,
                               retry_cap_s=1, retryable=False)
        assert row["state"] == "FAILED" and row["attempt"] == 1


async def test_cancel_queued_and_running(pool, database_url):
    got: asyncio.Queue = asyncio.Queue()
    listener = await asyncpg.connect(database_url)
    await listener.add_listener(queue.CANCEL_CHANNEL, lambda *a: got.put_nowait(a[-1]))
    try:
        async with pool.acquire() as conn:
            await register(conn, "q")
            await register(conn, "r")
            queued, _ = await queue.enqueue(conn, model_id="q", mode="FULL", priority=1)
            running, _ = await queue.enqueue(conn, model_id="r", mode="FULL", priority=4)
            [claimed] = await queue.claim(conn, worker="w", lease_s=30, limit=1)
            assert claimed["id"] == running["id"]
            row = await queue.request_cancel(conn, queued["id"])
            assert row["state"] == "CANCELLED"
            row = await queue.request_cancel(conn, running["id"])
            assert row["state"] == "RUNNING" and row["cancel_requested"]
            assert await asyncio.wait_for(got.get(), 5) == str(running["id"])
            assert await queue.heartbeat(conn, [(running["id"], str(claimed["lease_token"]))], 30) == {running["id"]: True}
            assert await queue.report_progress(conn, running["id"], str(claimed["lease_token"]), 0.2, "x") is False
            done = await queue.finish_cancelled(conn, running["id"], str(claimed["lease_token"]))
            assert done["state"] == "CANCELLED"
            assert await queue.request_cancel(conn, running["id"]) is None  # already ended
            # Cancelled jobs free the model for a new one.
            _, created = await queue.enqueue(conn, model_id="r", mode="FULL", priority=1)
            assert created
    finally:
        await listener.close()


async def test_rescue_fails_the_last_attempt_and_cancels_cancelled(pool):
    async with pool.acquire() as conn:
        await register(conn, "a")
        await register(conn, "b")
        await queue.enqueue(conn, model_id="a", mode="FULL", priority=2, max_attempts=1)
        b, _ = await queue.enqueue(conn, model_id="b", mode="FULL", priority=1)
        await queue.claim(conn, worker="gone", lease_s=0.01, limit=2)
        await conn.execute("UPDATE retrain_jobs SET cancel_requested = true WHERE id = $1", b["id"])
        await asyncio.sleep(0.05)
        rows = {r["model_id"]: r for r in await queue.rescue_expired(conn)}
        assert rows["a"]["state"] == "FAILED" and "gone" in rows["a"]["error"]
        assert rows["b"]["state"] == "CANCELLED"


async def test_release_returns_the_attempt(pool):
    async with pool.acquire() as conn:
        await register(conn)
        await queue.enqueue(conn, model_id="m1", mode="FULL", priority=2)
        [job] = await queue.claim(conn, worker="w", lease_s=30)
        row = await queue.release(conn, job["id"], str(job["lease_token"]))
        assert row["state"] == "QUEUED" and row["attempt"] == 0 and row["lease_token"] is None


async def test_list_jobs_pages_newest_first(pool):
    async with pool.acquire() as conn:
        for i in range(5):
            await register(conn, f"m{i}")
            await queue.enqueue(conn, model_id=f"m{i}", mode="FULL", priority=2)
        page = await queue.list_jobs(conn, model_id=None, state=None, before_id=None, limit=3)
        nxt = await queue.list_jobs(conn, model_id=None, state=None, before_id=page[-1]["id"], limit=3)
        ids = [r["id"] for r in page + nxt]
        assert ids == sorted(ids, reverse=True) and len(ids) == 5
        only = await queue.list_jobs(conn, model_id="m2", state="QUEUED", before_id=None, limit=10)
        assert [r["model_id"] for r in only] == ["m2"]


async def test_unknown_model_is_a_foreign_key_error(pool):
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await queue.enqueue(conn, model_id=uuid.uuid4().hex, mode="FULL", priority=2)


async def test_completion_stores_the_improvement_and_the_feedback_row_copies_it(pool):
    from closedloop.server.store import jobs as job_store

    async with pool.acquire() as conn:
        await register(conn)
        await queue.enqueue(conn, model_id="m1", mode="FULL", priority=2)
        [job] = await queue.claim(conn, worker="w", lease_s=30)
        # rmse: lower is better, so 0.5 -> 0.4 is +0.1; the stored figure is the caller's, as given.
        done = await queue.complete(conn, job["id"], str(job["lease_token"]), metric="rmse", champion_metric=0.5,
                                    challenger_metric=0.4, improvement=0.1, new_version=2)
        assert done["improvement"] == pytest.approx(0.1)
        await job_store.record_feedback(conn, done)
        row = await conn.fetchrow("SELECT improvement FROM feedback_loop_metrics WHERE job_id = $1", job["id"])
        assert row["improvement"] == pytest.approx(0.1)
