"""RetrainJob.trained_version and serving_version over a real database: the version a job trained is
not necessarily the one serving after it (not promoted, or a rollback landed while it ran)."""

from __future__ import annotations

import datetime as dt

import pytest

from closedloop.server.api.jobs import JobHandlers
from closedloop.v1 import retrain_pb2 as pb

T0 = dt.datetime(2024, 3, 1, 12, tzinfo=dt.timezone.utc)
HOUR = dt.timedelta(hours=1)


@pytest.fixture
async def api(pool):
    async with pool.acquire() as conn:
        for m in ("a", "b"):
            await conn.execute("INSERT INTO monitoring_retraining_integration (model_id, training, metric) "
                               "VALUES ($1, '{}'::jsonb, 'accuracy')", m)
        # Model a: version 1 promoted at T0, an operator rolled back to version 3 at T0 + 2h.
        await conn.executemany(
            "INSERT INTO model_promotions (model_id, from_version, to_version, kind, create_time) "
            "VALUES ('a', $1, $2, $3, $4)",
            [(0, 1, "PROMOTION", T0), (1, 3, "ROLLBACK", T0 + 2 * HOUR)])
    return JobHandlers(pool, None)


async def add_job(pool, model_id: str, state: str, *, promoted: bool = False, version: int = 0,
                  end: dt.datetime | None = None) -> str:
    async with pool.acquire() as conn:
        job_id = await conn.fetchval(
            """INSERT INTO retrain_jobs (model_id, mode, priority, state, promoted, new_version, end_time)
               VALUES ($1, 'FULL', 2, $2, $3, $4, $5) RETURNING id""",
            model_id, state, promoted, version, end)
    return str(job_id)


async def test_serving_version_is_the_promoted_one_or_the_one_that_stayed(api, pool):
    kept_early = await add_job(pool, "a", "SUCCEEDED", version=2, end=T0 + HOUR)
    kept_late = await add_job(pool, "a", "SUCCEEDED", version=4, end=T0 + 3 * HOUR)
    promoted = await add_job(pool, "a", "SUCCEEDED", promoted=True, version=5, end=T0 + 4 * HOUR)
    failed = await add_job(pool, "a", "FAILED", end=T0 + 5 * HOUR)
    never_served = await add_job(pool, "b", "SUCCEEDED", version=1, end=T0)

    async def job(job_id):
        return await api.GetJob(pb.GetJobRequest(id=job_id), None)

    early = await job(kept_early)
    assert (early.trained_version, early.serving_version, early.promoted) == (2, 1, False)
    assert early.new_version == early.trained_version  # the deprecated field keeps its old meaning
    late = await job(kept_late)
    assert (late.trained_version, late.serving_version) == (4, 3)  # the rollback had landed meanwhile
    assert ((await job(promoted)).trained_version, (await job(promoted)).serving_version) == (5, 5)
    assert (await job(failed)).serving_version == 0 and (await job(failed)).trained_version == 0
    assert (await job(never_served)).serving_version == 0

    listed = await api.ListJobs(pb.ListJobsRequest(model_id="a"), None)
    assert [(j.id, j.serving_version) for j in listed.jobs] == [
        (failed, 0), (promoted, 5), (kept_late, 3), (kept_early, 1)]
    watched = [m async for m in api.WatchJob(pb.WatchJobRequest(id=kept_late), None)]
    assert watched[-1].serving_version == 3
