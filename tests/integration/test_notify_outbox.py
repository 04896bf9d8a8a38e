"""The outbox on real PostgreSQL: rows written with what they report (or not at all), idempotent
keys, replicas sharing due rows with SKIP LOCKED, fenced results, backoff and dead letters."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from closedloop.server.config import NotifySettings, NotifyTarget
from closedloop.server.notify import events
from closedloop.server.notify.worker import DeliveryWorker
from closedloop.server.store import outbox

SETTINGS = NotifySettings(targets={"ops": NotifyTarget("ops", "webhook", "http://127.0.0.1:9/x", "s3cret")},
                          on_retrain_failed="ops", on_not_promoted="ops", on_rollback="ops")


def job(state: str, promoted: bool = False, job_id: int = 7) -> dict:
    return {"id": job_id, "model_id": "m1", "state": state, "mode": "FULL", "attempt": 3, "error": "boom",
            "metric": "accuracy", "champion_metric": 0.8, "challenger_metric": 0.7, "promoted": promoted,
            "new_version": 0}


async def rows(conn) -> list:
    return await outbox.list_notifications(conn, state=None, before_id=None, limit=100)


async def test_job_outcomes_are_written_once_and_only_when_configured(pool):
    async with pool.acquire() as conn:
        for _ in range(2):  # recorded twice (a retried transaction): one notification
            await events.record_job_outcome(conn, SETTINGS, job("FAILED"))
        await events.record_job_outcome(conn, SETTINGS, job("SUCCEEDED", promoted=False, job_id=8))
        await events.record_job_outcome(conn, SETTINGS, job("SUCCEEDED", promoted=True, job_id=9))
        await events.record_job_outcome(conn, NotifySettings(), job("FAILED", job_id=10))
        got = await rows(conn)
    assert sorted((r["event"], r["job_id"]) for r in got) == [("retrain.failed", 7), ("retrain.not_promoted", 8)]
    failed = next(r for r in got if r["job_id"] == 7)
    assert failed["idempotency_key"] == "closedloop-job-7-retrain.failed-ops"
    assert failed["payload"]["version"] == 1 and failed["payload"]["job"]["error"] == "boom"
    assert "s3cret" not in str(got)


async def test_a_rolled_back_transaction_leaves_no_notification(pool):
    async with pool.acquire() as conn:
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await events.record_job_outcome(conn, SETTINGS, job("FAILED"))
                raise RuntimeError("the decision failed")
        assert await rows(conn) == []


async def test_rollback_event(pool):
    change = {"id": 3, "model_id": "m1", "from_version": 4, "to_version": 3}
    async with pool.acquire() as conn:
        await events.record_rollback(conn, SETTINGS, change, alert_id=11, rule="bad_model")
        await events.record_rollback(conn, SETTINGS, None, alert_id=12, rule="bad_model")  # nothing moved
        [row] = await rows(conn)
    assert row["event"] == "model.rolled_back" and row["payload"]["rollback"]["to_version"] == 3
    assert row["payload"]["summary"] == "model m1 rolled back from version 4 to 3 by rule bad_model on alert 11"


async def test_replicas_claim_disjoint_rows_and_results_are_fenced(pool):
    async with pool.acquire() as conn:
        for i in range(6):
            await events.record_job_outcome(conn, SETTINGS, job("FAILED", job_id=100 + i))
    async with pool.acquire() as a, pool.acquire() as b:
        async with a.transaction(), b.transaction():
            first = await outbox.claim_due(a, limit=4, lease_s=60)
            second = await outbox.claim_due(b, limit=4, lease_s=60)  # skips a's locked rows
    assert len(first) == 4 and len(second) == 2
    assert not {r["id"] for r in first} & {r["id"] for r in second}
    async with pool.acquire() as conn:
        assert await outbox.claim_due(conn, limit=10, lease_s=60) == []  # leased: not due
        row = first[0]
        assert await outbox.mark_failed(conn, row["id"], row["attempts"], status=500, error="HTTP 500",
                                        retry_in_s=0.0) == "PENDING"
        [again] = await outbox.claim_due(conn, limit=10, lease_s=60)
        assert again["attempts"] == 2
        # The first attempt's late report is fenced; the second's counts.
        assert not await outbox.mark_delivered(conn, row["id"], 1, 200)
        assert await outbox.mark_delivered(conn, row["id"], 2, 200)
        assert (await outbox.get(conn, row["id"]))["state"] == "DELIVERED"


async def test_worker_backs_off_then_dead_letters_and_counts_outcomes(pool):
    attempts = []

    async def down(request):
        attempts.append(request.headers["Idempotency-Key"])
        return web.Response(status=502)

    app = web.Application()
    app.router.add_post("/hook", down)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    target = NotifyTarget("ops", "webhook", f"http://127.0.0.1:{port}/hook", "s3cret", max_attempts=3,
                          backoff_initial=0.01, backoff_max=0.02)
    seen = []
    worker = DeliveryWorker(pool, NotifySettings(targets={"ops": target}, on_retrain_failed="ops"),
                            on_outcome=lambda t, o: seen.append((t, o)))
    async with pool.acquire() as conn:
        await events.record_job_outcome(conn, worker.settings, job("FAILED"))
    await worker.start()
    try:
        for _ in range(600):
            async with pool.acquire() as conn:
                [row] = await rows(conn)
            if row["state"] == "DEAD":
                break
            await asyncio.sleep(0.01)
    finally:
        await worker.stop()
        await runner.cleanup()
    assert (row["state"], row["attempts"], row["last_status"]) == ("DEAD", 3, 502)
    assert attempts == ["closedloop-job-7-retrain.failed-ops"] * 3
    assert seen == [("ops", "retry"), ("ops", "retry"), ("ops", "dead")]
    assert worker.outcomes[("ops", "dead")] == 1


async def test_a_target_no_longer_configured_is_a_dead_letter(pool):
    async with pool.acquire() as conn:
        await events.record_job_outcome(conn, SETTINGS, job("FAILED"))
    worker = DeliveryWorker(pool, NotifySettings())
    assert await worker.deliver_due() == 1
    async with pool.acquire() as conn:
        [row] = await rows(conn)
    assert row["state"] == "DEAD" and row["last_error"] == "target 'ops' is not configured"


async def test_a_failed_retrain_writes_its_notification_with_the_failure(pool, database_url, tmp_path):
    from closedloop.server.config import Settings
    from closedloop.server.executor.backends import LocalBackend
    from closedloop.server.executor.runner import JobRunner
    from closedloop.server.store import queue

    settings = Settings(database_url=database_url, data_dir=tmp_path, workers=1, notify=SETTINGS)
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO monitoring_retraining_integration (model_id, training, metric)
               VALUES ('m1', '{"estimator": "linear_model.NoSuchModel", "synthetic": {"rows": 100}}', 'accuracy')""")
        job_row, _ = await queue.enqueue(conn, model_id="m1", mode="FULL", priority=2, max_attempts=1)
    backend = LocalBackend(1)
    runner = JobRunner(settings, pool, database_url, backend=backend, retry_base_s=0.05, warm_up=False)
    await runner.start()
    try:
        for _ in range(1000):
            async with pool.acquire() as conn:
                found = await rows(conn)
            if found:
                break
            await asyncio.sleep(0.02)
    finally:
        await runner.stop()
        backend.shutdown()
    [row] = found
    assert (row["event"], row["job_id"], row["target"]) == ("retrain.failed", job_row["id"], "ops")
    assert row["payload"]["job"]["state"] == "FAILED" and row["payload"]["job"]["error"]
