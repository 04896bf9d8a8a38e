"""JobRunner with real worker processes against a real PostgreSQL: training end to end, kill -9 of a
worker mid-fit, retries, timeouts, cancellation and graceful shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import pytest
import structlog

from closedloop.server.config import Settings
from closedloop.server.executor.backends import LocalBackend
from closedloop.server.executor.job_kinds import ProbeKind
from closedloop.server.executor.runner import JobRunner
from closedloop.server.store import queue

from .test_executor_helpers import wait_for

SPEC = {"estimator": "linear_model.SGDClassifier", "params": {"loss": "log_loss", "random_state": 3},
        "synthetic": {"seed": 21, "drift": 0.8, "rows": 2000}, "target": "direction", "metric": "accuracy",
        "promotion_margin": 0.0}
# Slow enough (a second or two) to be killed mid-fit, small enough to keep the suite quick.
SLOW_SPEC = dict(SPEC, estimator="ensemble.RandomForestClassifier",
                 params={"n_estimators": 250, "n_jobs": 1, "random_state": 0})


async def register(conn, model_id: str, spec: dict | None = None) -> None:
    spec = spec or {}
    await conn.execute(
        """INSERT INTO monitoring_retraining_integration (model_id, training, metric, promotion_margin)
           VALUES ($1, $2, $3, $4)""",
        model_id, spec, spec.get("metric", "accuracy"), float(spec.get("promotion_margin", 0.0)),
    )



def job_in(pool, job_id: int, *states: str):
    async def check():
        async with pool.acquire() as conn:
            row = await queue.get(conn, job_id)
        return row if row["state"] in states else None
    return check


@pytest.fixture(scope="module")
def backend():
    """Two worker processes shared by the tests of this module (process start costs a second)."""
    b = LocalBackend(2)
    yield b
    b.shutdown()


@pytest.fixture
def settings(tmp_path, database_url):
    return Settings(database_url=database_url, data_dir=tmp_path, workers=2, job_lease=1.5, job_timeout=120)


@pytest.fixture
async def start_runner(pool, database_url, settings, backend):
    runners: list[JobRunner] = []

    async def start(kind=None, **kw) -> JobRunner:
        kw.setdefault("retry_base_s", 0.1)
        r = JobRunner(settings, pool, database_url, backend=backend, kind=kind, **kw)
        await r.start()
        runners.append(r)
        return r

    yield start
    for r in runners:
        await r.stop()


async def enqueue(pool, model_id: str, **kw):
    kw.setdefault("mode", "FULL")
    kw.setdefault("priority", 2)
    async with pool.acquire() as conn:
        job, _ = await queue.enqueue(conn, model_id=model_id, **kw)
    return job


async def test_training_job_versions_promotes_and_records_feedback(pool, start_runner, settings):
    async with pool.acquire() as conn:
        await register(conn, "fx", SPEC)
    await start_runner()
    first = await enqueue(pool, "fx", manual=True, reason="first")
    done = await wait_for(job_in(pool, first["id"], "SUCCEEDED", "FAILED"))
    assert done["state"] == "SUCCEEDED", done["error"]
    assert done["promoted"] and done["new_version"] == 1 and done["champion_metric"] is None
    assert done["progress"] == 1 and done["executor_pid"] and done["attempt"] == 1

    second = await enqueue(pool, "fx", mode="INCREMENTAL", trigger_rule="drift_auto_retrain")
    done2 = await wait_for(job_in(pool, second["id"], "SUCCEEDED", "FAILED"))
    assert done2["state"] == "SUCCEEDED", done2["error"]
    assert done2["new_version"] == 2 and done2["champion_metric"] is not None and not done2["refit_fallback"]

    async with pool.acquire() as conn:
        versions = await conn.fetch("SELECT * FROM model_versions WHERE model_id = 'fx' ORDER BY version")
        model = await conn.fetchrow("SELECT * FROM monitoring_retraining_integration WHERE model_id = 'fx'")
        promotions = await conn.fetch("SELECT * FROM model_promotions WHERE model_id = 'fx' ORDER BY id")
        feedback = await conn.fetch("SELECT * FROM feedback_loop_metrics ORDER BY job_id")
    assert [v["version"] for v in versions] == [1, 2]
    assert versions[0]["promoted"] and versions[0]["artifact_path"].endswith("/fx/1.skops")
    assert os.path.isfile(versions[1]["artifact_path"]) and len(versions[1]["artifact_sha256"]) == 64
    assert versions[1]["data_end"] > versions[0]["data_end"]
    expected_current = 2 if done2["promoted"] else 1
    assert model["current_version"] == expected_current and model["current_version_time"] is not None
    assert [(p["from_version"], p["to_version"]) for p in promotions][0] == (0, 1)
    assert [f["outcome"] for f in feedback] == ["SUCCEEDED", "SUCCEEDED"]
    assert feedback[0]["manual"] and feedback[0]["rule"] is None and feedback[0]["improvement"] is None
    assert feedback[1]["rule"] == "drift_auto_retrain" and feedback[1]["mode"] == "INCREMENTAL"
    assert feedback[1]["improvement"] == pytest.approx(done2["challenger_metric"] - done2["champion_metric"])
    assert feedback[1]["queue_wait_s"] >= 0 and feedback[1]["run_s"] > 0


async def test_alert_to_promotion_time_is_recorded(pool, start_runner):
    async with pool.acquire() as conn:
        await register(conn, "fx", SPEC)
        alert_id = await conn.fetchval(
            """INSERT INTO monitoring_alert_triggers (model_id, alert_type, severity, observe_time)
               VALUES ('fx', 'drift', 3, now() - interval '10 seconds') RETURNING id""")
    await start_runner()
    job = await enqueue(pool, "fx", trigger_alert_id=alert_id, trigger_rule="drift")
    await wait_for(job_in(pool, job["id"], "SUCCEEDED"))
    async with pool.acquire() as conn:
        fb = await conn.fetchrow("SELECT * FROM feedback_loop_metrics WHERE job_id = $1", job["id"])
    assert fb["alert_id"] == alert_id and fb["promoted"] and fb["alert_to_promotion_s"] >= 10


async def test_kill_9_mid_fit_reruns_the_job_once(pool, start_runner):
    async with pool.acquire() as conn:
        await register(conn, "slow", SLOW_SPEC)
    with structlog.testing.capture_logs() as logs:
        await start_runner()
        job = await enqueue(pool, "slow")

        async def fitting():
            async with pool.acquire() as conn:
                row = await queue.get(conn, job["id"])
            return row if row["progress_message"].startswith("fitting") and row["executor_pid"] else None

        row = await wait_for(fitting, interval=0.01)
        os.kill(row["executor_pid"], signal.SIGKILL)
        done = await wait_for(job_in(pool, job["id"], "SUCCEEDED", "FAILED"), timeout=90)
    assert done["state"] == "SUCCEEDED" and done["attempt"] == 2 and done["new_version"] == 1
    assert done["executor_pid"] != row["executor_pid"]
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM model_versions WHERE model_id = 'slow'") == 1
        assert await conn.fetchval("SELECT count(*) FROM feedback_loop_metrics WHERE job_id = $1", job["id"]) == 1
    # (Only warnings are asserted: other tests may configure structlog to drop info events.)
    assert "retrain.worker_lost" in [e["event"] for e in logs]


async def test_failing_jobs_retry_with_growing_gaps_then_fail(pool, start_runner, database_url, tmp_path):
    log_path = tmp_path / "runs.log"
    async with pool.acquire() as conn:
        await register(conn, "bad")
        await register(conn, "spec")
    with structlog.testing.capture_logs() as logs:
        await start_runner(ProbeKind(database_url), retry_base_s=0.1)
        job = await enqueue(pool, "bad", max_attempts=4,
                            reason=json.dumps({"fail": "boom", "log": str(log_path), "report": False}))
        permanent = await enqueue(pool, "spec", reason=json.dumps({"fail": "bad spec", "permanent": True}))
        done = await wait_for(job_in(pool, job["id"], "FAILED", "SUCCEEDED"))
        perm = await wait_for(job_in(pool, permanent["id"], "FAILED", "SUCCEEDED"))
    assert done["state"] == "FAILED" and done["attempt"] == 4
    assert done["error"] == "attempt 4: RuntimeError: boom"
    assert len(log_path.read_text().splitlines()) == 4
    gaps = [e["retry_in"] for e in logs if e["event"] == "retrain.job_retry" and e["job_id"] == job["id"]]
    assert len(gaps) == 3 and gaps[0] <= gaps[1] <= gaps[2] and gaps[2] > gaps[0]
    assert perm["state"] == "FAILED" and perm["attempt"] == 1 and "bad spec" in perm["error"]
    async with pool.acquire() as conn:
        outcomes = await conn.fetch("SELECT outcome FROM feedback_loop_metrics ORDER BY job_id")
    assert [o["outcome"] for o in outcomes] == ["FAILED", "FAILED"]


async def test_timeout_ends_the_attempt(pool, start_runner, database_url):
    async with pool.acquire() as conn:
        await register(conn, "hang")
    runner = await start_runner(ProbeKind(database_url))
    job = await enqueue(pool, "hang", max_attempts=1, timeout_s=0.5,
                        reason=json.dumps({"sleep": 60, "report": False}))
    done = await wait_for(job_in(pool, job["id"], "FAILED"))
    assert "timed out after 0.5 s" in done["error"]
    # The hung process was killed and replaced: the slot runs the next job.
    async with pool.acquire() as conn:
        await register(conn, "next")
    nxt = await enqueue(pool, "next", reason=json.dumps({"report": False}))
    assert (await wait_for(job_in(pool, nxt["id"], "SUCCEEDED")))["attempt"] == 1
    assert runner.running_job_ids == []


async def test_cancel_running_job_kills_it_and_queued_job_never_runs(pool, start_runner, database_url, backend, tmp_path):
    log_path = tmp_path / "runs.log"
    async with pool.acquire() as conn:
        await register(conn, "long")
    await start_runner(ProbeKind(database_url), slots=1)
    job = await enqueue(pool, "long", reason=json.dumps({"sleep": 60, "report": False, "log": str(log_path)}))
    await wait_for(lambda: asyncio.sleep(0, log_path.exists()))
    pids_before = set(backend.pids())
    async with pool.acquire() as conn:
        row = await queue.request_cancel(conn, job["id"])
    assert row["state"] == "RUNNING"
    done = await wait_for(job_in(pool, job["id"], "CANCELLED"), timeout=5.0)  # the 5 s promise
    assert done["end_time"] is not None and done["lease_token"] is None
    await wait_for(lambda: asyncio.sleep(0, set(backend.pids()) != pids_before), timeout=10)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT outcome FROM feedback_loop_metrics WHERE job_id = $1", job["id"]) == "CANCELLED"


async def test_graceful_shutdown_returns_claimed_jobs(pool, start_runner, database_url):
    async with pool.acquire() as conn:
        await register(conn, "a")
        await register(conn, "b")
    runner = await start_runner(ProbeKind(database_url))
    jobs = [await enqueue(pool, m, reason=json.dumps({"sleep": 60, "report": False})) for m in ("a", "b")]
    for j in jobs:
        await wait_for(job_in(pool, j["id"], "RUNNING"))
    await runner.stop()
    async with pool.acquire() as conn:
        rows = [await queue.get(conn, j["id"]) for j in jobs]
    assert [r["state"] for r in rows] == ["QUEUED", "QUEUED"]
    assert all(r["attempt"] == 0 and r["lease_token"] is None and r["worker"] is None for r in rows)
    # Another runner picks them up (made quick first, so the test does not wait a minute).
    async with pool.acquire() as conn:
        await conn.execute("""UPDATE retrain_jobs SET reason = '{"report": false}'""")
    await start_runner(ProbeKind(database_url))
    for j in jobs:
        assert (await wait_for(job_in(pool, j["id"], "SUCCEEDED")))["attempt"] == 1


async def test_prepare_failure_of_an_unregistered_spec_fails_permanently(pool, start_runner):
    async with pool.acquire() as conn:
        await register(conn, "weird", dict(SPEC, estimator="os.system"))
    await start_runner()
    job = await enqueue(pool, "weird")
    done = await wait_for(job_in(pool, job["id"], "FAILED", "SUCCEEDED"))
    assert done["state"] == "FAILED" and done["attempt"] == 1 and "SpecError" in done["error"]


class RecordingProbe(ProbeKind):
    """ProbeKind that notes how each step of a job met the database."""

    def __init__(self, database_url: str) -> None:
        super().__init__(database_url)
        self.seen: list[tuple[str, bool, bool]] = []

    async def prepare(self, conn, job):
        self.seen.append(("prepare", conn is not None, False))
        return await super().prepare(conn, job)

    async def record(self, conn, job, result):
        self.seen.append(("record", conn is not None, conn is not None and conn.is_in_transaction()))
        return await super().record(conn, job, result)


async def test_test_kinds_complete_through_the_retrain_path(pool, start_runner, database_url):
    """The probe and no-op kinds that the exactly-once, kill -9 and benchmark figures use go through
    the same prepare and completion transaction as a retrain (issue 10, point 12)."""
    async with pool.acquire() as conn:
        await register(conn, "same-path")
    kind = RecordingProbe(database_url)
    await start_runner(kind)
    job = await enqueue(pool, "same-path", reason=json.dumps({"report": False}))
    done = await wait_for(job_in(pool, job["id"], "SUCCEEDED"))
    assert done["progress_message"].startswith("probe ran in pid")
    assert kind.seen == [("prepare", True, False), ("record", True, True)]
