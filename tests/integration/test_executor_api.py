"""The RetrainService jobs handlers (JobHandlers) over a real database: validation, idempotency,
paging, cancel, WatchJob against a running JobRunner, rollback and versions."""

from __future__ import annotations

import asyncio
import json

import pytest

from closedloop.server.api.jobs import JobHandlers
from closedloop.server.config import Settings
from closedloop.server.errors import FailedPrecondition, InvalidArgument, NotFound
from closedloop.server.executor.backends import LocalBackend
from closedloop.server.executor.job_kinds import ProbeKind
from closedloop.server.executor.runner import JobRunner
from closedloop.server.store import versions as version_store
from closedloop.v1 import common_pb2, retrain_pb2 as pb


@pytest.fixture
def settings(tmp_path, database_url):
    return Settings(database_url=database_url, data_dir=tmp_path, workers=1, job_lease=2.0, job_max_attempts=5)


@pytest.fixture
async def api(pool, settings):
    async with pool.acquire() as conn:
        for m in ("a", "b", "c"):
            await conn.execute("INSERT INTO monitoring_retraining_integration (model_id, training, metric) "
                               "VALUES ($1, '{}'::jsonb, 'accuracy')", m)
    return JobHandlers(pool, settings)


def fields(exc_info) -> set[str]:
    return {v.field for v in exc_info.value.violations}


async def test_submit_validates_every_field(api):
    with pytest.raises(InvalidArgument) as e:
        await api.SubmitRetrain(pb.SubmitRetrainRequest(model_id="", mode=7, priority=9, reason="x" * 2000,
                                                        request_id="r" * 200), None)
    assert fields(e) == {"model_id", "mode", "priority", "reason", "request_id"}
    with pytest.raises(InvalidArgument):
        await api.SubmitRetrain(pb.SubmitRetrainRequest(model_id="bad id!"), None)
    with pytest.raises(NotFound):
        await api.SubmitRetrain(pb.SubmitRetrainRequest(model_id="nope"), None)


async def test_submit_defaults_idempotency_and_coalescing(api):
    job = await api.SubmitRetrain(pb.SubmitRetrainRequest(model_id="a", request_id="k1"), None)
    assert job.state == pb.JOB_STATE_QUEUED and job.mode == common_pb2.RETRAIN_MODE_FULL
    assert job.priority == common_pb2.PRIORITY_MEDIUM and job.trigger.manual and job.max_attempts == 5
    assert job.reason == "manual retrain" and not job.HasField("champion_metric")
    again = await api.SubmitRetrain(pb.SubmitRetrainRequest(model_id="a", request_id="k1"), None)
    assert again.id == job.id and again.coalesced_triggers == 0
    more = await api.SubmitRetrain(pb.SubmitRetrainRequest(model_id="a", priority=common_pb2.PRIORITY_CRITICAL,
                                                           mode=common_pb2.RETRAIN_MODE_INCREMENTAL), None)
    assert more.id == job.id and more.priority == common_pb2.PRIORITY_CRITICAL
    assert more.mode == common_pb2.RETRAIN_MODE_FULL and more.coalesced_triggers == 1
    got = await api.GetJob(pb.GetJobRequest(id=job.id), None)
    assert got.priority == common_pb2.PRIORITY_CRITICAL and got.create_time.seconds > 0


async def test_get_job_errors(api):
    with pytest.raises(InvalidArgument) as e:
        await api.GetJob(pb.GetJobRequest(id="abc"), None)
    assert fields(e) == {"id"}
    with pytest.raises(InvalidArgument):
        await api.GetJob(pb.GetJobRequest(), None)
    with pytest.raises(NotFound):
        await api.GetJob(pb.GetJobRequest(id="999999"), None)


async def test_list_jobs_filters_and_pages(api):
    ids = []
    for m in ("a", "b", "c"):
        ids.append((await api.SubmitRetrain(pb.SubmitRetrainRequest(model_id=m), None)).id)
    await api.CancelJob(pb.CancelJobRequest(id=ids[0]), None)
    ids.append((await api.SubmitRetrain(pb.SubmitRetrainRequest(model_id="a"), None)).id)

    seen, token = [], ""
    while True:
        page = await api.ListJobs(pb.ListJobsRequest(page_size=3, page_token=token), None)
        seen += [j.id for j in page.jobs]
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted(ids, key=int, reverse=True)
    only_a = await api.ListJobs(pb.ListJobsRequest(model_id="a"), None)
    assert [j.id for j in only_a.jobs] == [ids[3], ids[0]]
    cancelled = await api.ListJobs(pb.ListJobsRequest(state=pb.JOB_STATE_CANCELLED), None)
    assert [j.id for j in cancelled.jobs] == [ids[0]]
    first = await api.ListJobs(pb.ListJobsRequest(page_size=1), None)
    with pytest.raises(InvalidArgument) as e:
        await api.ListJobs(pb.ListJobsRequest(page_size=1, page_token=first.next_page_token, model_id="a"), None)
    assert fields(e) == {"page_token"}
    for bad in (pb.ListJobsRequest(page_size=-1), pb.ListJobsRequest(page_token="garbage!"),
                pb.ListJobsRequest(state=42), pb.ListJobsRequest(model_id="bad id!")):
        with pytest.raises(InvalidArgument):
            await api.ListJobs(bad, None)
    huge = await api.ListJobs(pb.ListJobsRequest(page_size=100000), None)
    assert len(huge.jobs) == 4


async def test_cancel_queued_then_ended(api, pool):
    job = await api.SubmitRetrain(pb.SubmitRetrainRequest(model_id="b"), None)
    done = await api.CancelJob(pb.CancelJobRequest(id=job.id), None)
    assert done.state == pb.JOB_STATE_CANCELLED and done.end_time.seconds > 0
    with pytest.raises(FailedPrecondition):
        await api.CancelJob(pb.CancelJobRequest(id=job.id), None)
    with pytest.raises(NotFound):
        await api.CancelJob(pb.CancelJobRequest(id="424242"), None)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT outcome FROM feedback_loop_metrics WHERE job_id = $1", int(job.id)) == "CANCELLED"


@pytest.fixture
async def runner(pool, database_url, settings):
    backend = LocalBackend(1, preload=["closedloop.server.executor.job_kinds"])
    r = JobRunner(settings, pool, database_url, backend=backend, kind=ProbeKind(database_url), poll_interval_s=0.5)
    await r.start()
    yield r
    await r.stop()
    backend.shutdown()


async def collect(stream) -> list:
    return [m async for m in stream]


async def test_watch_job_streams_until_it_ends(api, runner, pool):
    job = await api.SubmitRetrain(pb.SubmitRetrainRequest(model_id="a", reason=json.dumps({"sleep": 0.6})), None)
    messages = await asyncio.wait_for(collect(api.WatchJob(pb.WatchJobRequest(id=job.id), None)), 30)
    states = [m.state for m in messages]
    assert states[-1] == pb.JOB_STATE_SUCCEEDED and pb.JOB_STATE_RUNNING in states
    assert messages[-1].progress == 1.0
    assert any(m.progress_message == "sleeping" for m in messages)
    with pytest.raises(NotFound):
        await collect(api.WatchJob(pb.WatchJobRequest(id="777777"), None))


async def test_cancel_running_job_through_the_api(api, runner):
    job = await api.SubmitRetrain(pb.SubmitRetrainRequest(model_id="c", reason=json.dumps({"sleep": 60, "report": False})), None)
    watch = asyncio.ensure_future(collect(api.WatchJob(pb.WatchJobRequest(id=job.id), None)))
    while (await api.GetJob(pb.GetJobRequest(id=job.id), None)).state != pb.JOB_STATE_RUNNING:
        await asyncio.sleep(0.02)
    answer = await api.CancelJob(pb.CancelJobRequest(id=job.id), None)
    assert answer.state == pb.JOB_STATE_RUNNING and answer.progress_message == "cancelling"
    messages = await asyncio.wait_for(watch, 5.0)  # a running job stops within 5 s
    assert messages[-1].state == pb.JOB_STATE_CANCELLED


async def add_version(conn, model_id: str, version: int, promoted: bool) -> None:
    await version_store.insert_version(
        conn, model_id=model_id, version=version, job_id=None, mode="FULL", metric="accuracy",
        metric_value=0.5 + version / 100, champion_metric_value=None, promoted=promoted,
        artifact_path=f"/x/{version}.skops", artifact_sha256="0" * 64, data_window="rows 0 .. 9", data_end="9",
        train_rows=10, holdout_rows=3, refit_fallback=False)
    if promoted:
        await version_store.set_current(conn, model_id, to_version=version, kind="PROMOTION")


async def test_rollback_and_versions(api, pool):
    with pytest.raises(FailedPrecondition):
        await api.RollbackModel(pb.RollbackModelRequest(model_id="a"), None)
    async with pool.acquire() as conn:
        await add_version(conn, "a", 1, True)
        await add_version(conn, "a", 2, True)
        await add_version(conn, "a", 3, False)
    versions = await api.ListModelVersions(pb.ListModelVersionsRequest(model_id="a"), None)
    assert [v.version for v in versions.versions] == [3, 2, 1]
    assert versions.versions[0].metric_value == pytest.approx(0.53) and not versions.versions[0].promoted

    model = await api.RollbackModel(pb.RollbackModelRequest(model_id="a", reason="bad fills"), None)
    assert model.current_version == 1
    model = await api.RollbackModel(pb.RollbackModelRequest(model_id="a", version=3), None)
    assert model.current_version == 3
    model = await api.RollbackModel(pb.RollbackModelRequest(model_id="a"), None)
    assert model.current_version == 2  # the newest earlier version that has served
    with pytest.raises(FailedPrecondition):
        await api.RollbackModel(pb.RollbackModelRequest(model_id="a", version=2), None)
    with pytest.raises(NotFound):
        await api.RollbackModel(pb.RollbackModelRequest(model_id="a", version=9), None)
    with pytest.raises(NotFound):
        await api.RollbackModel(pb.RollbackModelRequest(model_id="zz"), None)
    with pytest.raises(InvalidArgument) as e:
        await api.RollbackModel(pb.RollbackModelRequest(model_id="", version=-1), None)
    assert fields(e) == {"model_id", "version"}
    with pytest.raises(NotFound):
        await api.ListModelVersions(pb.ListModelVersionsRequest(model_id="zz"), None)
    async with pool.acquire() as conn:
        history = await conn.fetch("SELECT kind, from_version, to_version, reason FROM model_promotions ORDER BY id")
    assert [(h["kind"], h["from_version"], h["to_version"]) for h in history] == [
        ("PROMOTION", 0, 1), ("PROMOTION", 1, 2), ("ROLLBACK", 2, 1), ("ROLLBACK", 1, 3), ("ROLLBACK", 3, 2)]
    assert history[2]["reason"] == "bad fills"
