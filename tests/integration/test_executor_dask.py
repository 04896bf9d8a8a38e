"""The Dask backend against a real dask.distributed.LocalCluster: a training job end to end, and a
worker killed mid-fit whose job runs again on the restarted worker."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
import structlog

from closedloop.server.config import Settings
from closedloop.server.executor.backends import DaskBackend
from closedloop.server.executor.runner import JobRunner
from closedloop.server.store import queue

from .test_executor_helpers import wait_for

distributed = pytest.importorskip("distributed")

SPEC = {"estimator": "ensemble.RandomForestClassifier", "params": {"n_estimators": 250, "n_jobs": 1, "random_state": 0},
        "synthetic": {"seed": 5, "drift": 0.5, "rows": 2000}, "target": "direction", "metric": "roc_auc"}


@pytest.fixture(scope="module")
def cluster():
    import dask

    # Dask itself re-runs a task whose worker died (allowed-failures, default 3); with 0 the loss
    # reaches our runner, which owns retries, attempts and fencing, on every backend alike.
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        c = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                                     memory_limit="2GiB")
    yield c
    c.close()



async def test_kill_dask_worker_mid_fit_reruns_the_job(pool, database_url, cluster, tmp_path):
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO monitoring_retraining_integration (model_id, training, metric) VALUES ('d', $1, 'roc_auc')",
            SPEC)
    settings = Settings(database_url=database_url, data_dir=tmp_path, workers=1, executor="dask",
                        dask_scheduler=cluster.scheduler_address, job_lease=2.0)
    backend = await asyncio.to_thread(DaskBackend, cluster.scheduler_address, 1)
    runner = JobRunner(settings, pool, database_url, backend=backend, retry_base_s=0.1, poll_interval_s=0.5)
    with structlog.testing.capture_logs() as logs:
        await runner.start()
        try:
            async with pool.acquire() as conn:
                job, _ = await queue.enqueue(conn, model_id="d", mode="FULL", priority=4)

            async def fitting():
                async with pool.acquire() as conn:
                    row = await queue.get(conn, job["id"])
                return row if row["progress_message"].startswith("fitting") and row["executor_pid"] else None

            row = await wait_for(fitting, timeout=90, interval=0.02)
            assert row["executor_pid"] != os.getpid()  # it runs in the Dask worker process
            os.kill(row["executor_pid"], signal.SIGKILL)

            async def ended():
                async with pool.acquire() as conn:
                    r = await queue.get(conn, job["id"])
                return r if r["state"] in ("SUCCEEDED", "FAILED") else None

            done = await wait_for(ended, timeout=90)
        finally:
            await runner.stop()
            await asyncio.to_thread(backend.shutdown)
    assert done["state"] == "SUCCEEDED", done["error"]
    assert done["attempt"] == 2 and done["new_version"] == 1 and done["promoted"]
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM model_versions WHERE model_id = 'd'") == 1
    assert "retrain.worker_lost" in [e["event"] for e in logs]
