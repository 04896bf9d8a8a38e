"""`closedloop serve --executor dask` against a LocalCluster of several worker processes: 200 queued
retrains across 100 models all run to completion with exactly one promotion decision each.

Two jobs per model, in two rounds (a model has one active job at a time): the first trains the
model's first version, the second trains a challenger against it, whose champion artifact travels
to the Dask worker and back through the task's arguments. Small synthetic data keeps each fit short.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from closedloop import AsyncClient

from ..acceptance.helpers import start_server_process, stop_process, synthetic_model

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.slow

MODELS, ROUNDS, DASK_WORKERS = 100, 2, 3
TRAINING = {"estimator": "linear_model.LogisticRegression", "params": {"max_iter": 200},
            "synthetic": {"seed": 3, "drift": 0.4, "rows": 300}, "target": "direction", "metric": "accuracy",
            "holdout_fraction": 0.25, "promotion_margin": 0.0}


@pytest.fixture(scope="module")
def cluster():
    c = distributed.LocalCluster(n_workers=DASK_WORKERS, threads_per_worker=1, processes=True,
                                 dashboard_address=":0", memory_limit="1GiB")
    yield c
    c.close()


async def wait_for_round(conn: asyncpg.Connection, expected: int, timeout: float = 300) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await conn.fetchval("SELECT count(*) FROM retrain_jobs WHERE state IN ('SUCCEEDED', 'FAILED', "
                              "'CANCELLED')") < expected:
        assert loop.time() < deadline, "the Dask workers did not finish the round"
        await asyncio.sleep(0.25)


async def test_200_retrains_over_100_models_on_a_dask_cluster(database_url, tmp_path, cluster):
    proc, target = start_server_process(database_url, tmp_path / "server", "--executor", "dask",
                                        "--dask-scheduler", cluster.scheduler_address,
                                        "--workers", str(DASK_WORKERS))
    models = [f"dask-{i:03d}" for i in range(MODELS)]
    conn = await asyncpg.connect(database_url)
    try:
        async with AsyncClient(target, timeout=60) as client:
            for m in models:
                await client.register_model(synthetic_model(m, training=TRAINING))
            for r in range(ROUNDS):
                await asyncio.gather(*[client.submit_retrain(m, mode="full", reason=f"round {r}") for m in models])
                await wait_for_round(conn, MODELS * (r + 1))
        # The scheduler was told to hand the first worker loss to closedloop's own retries.
        assert cluster.scheduler.allowed_failures == 0

        jobs = await conn.fetch("SELECT id, model_id, state, attempt, error, promoted, new_version FROM retrain_jobs")
        assert len(jobs) == MODELS * ROUNDS
        failed = [dict(j) for j in jobs if j["state"] != "SUCCEEDED"]
        assert failed == []
        # Exactly one promotion decision per job: one version row each (promoted or kept), and a
        # promotion record for exactly the jobs that promoted.
        decisions = await conn.fetch("SELECT job_id, count(*) AS n FROM model_versions GROUP BY job_id")
        assert sorted(r["job_id"] for r in decisions) == sorted(j["id"] for j in jobs)
        assert {r["n"] for r in decisions} == {1}
        promoted = {j["id"] for j in jobs if j["promoted"]}
        promotions = await conn.fetch("SELECT job_id FROM model_promotions WHERE kind = 'PROMOTION'")
        assert sorted(p["job_id"] for p in promotions) == sorted(promoted)
        # Every model's first job promoted its version 1; each model now has two versions.
        per_model = await conn.fetch("SELECT model_id, max(version) AS v, min(version) AS first "
                                     "FROM model_versions GROUP BY model_id")
        assert {(r["first"], r["v"]) for r in per_model} == {(1, 2)} and len(per_model) == MODELS
        current = await conn.fetchval("SELECT count(*) FROM monitoring_retraining_integration "
                                      "WHERE current_version >= 1")
        assert current == MODELS
    finally:
        await conn.close()
        stop_process(proc)
    assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
