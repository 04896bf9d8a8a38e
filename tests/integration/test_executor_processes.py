"""Several runner processes on one queue: exactly-once under load, and the fencing of a worker that
was paused (SIGSTOP) past its lease while another one finished its job."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import Counter

import pytest

from closedloop.server.config import Settings
from closedloop.server.executor.backends import LocalBackend
from closedloop.server.executor.job_kinds import ProbeKind
from closedloop.server.executor.runner import JobRunner
from closedloop.server.store import queue

from .test_executor_helpers import wait_for


class RunnerProcess:
    """`python -m closedloop.server.executor` as a child process, with its JSON log in a file."""

    def __init__(self, database_url: str, log_path, *, workers: int, slots: int, lease: float = 1.0) -> None:
        self.log_path = log_path
        self.log_file = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "closedloop.server.executor", "--database-url", database_url, "--work", "probe",
             "--workers", str(workers), "--slots", str(slots), "--job-lease", str(lease), "--retry-base", "0.1",
             "--poll-interval", "0.5"],
            stdout=subprocess.PIPE, stderr=self.log_file, text=True,
        )
        self.worker_id: str | None = None

    async def ready(self, timeout: float = 60.0) -> str:
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout)
        assert line.startswith("READY "), f"runner did not start: {line!r}\n{self.log_path.read_text()}"
        self.worker_id = line.split()[1]
        return self.worker_id

    def events(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()
        return self.proc.returncode


@pytest.fixture
def runner_processes(database_url, tmp_path):
    started: list[RunnerProcess] = []

    def start(name: str, **kw) -> RunnerProcess:
        rp = RunnerProcess(database_url, tmp_path / f"{name}.log", **kw)
        started.append(rp)
        return rp

    yield start
    for rp in started:
        rp.stop()



async def test_200_noop_jobs_on_two_processes_run_exactly_once(pool, runner_processes, tmp_path):
    runs = tmp_path / "runs.log"
    n = 200
    a = runner_processes("a", workers=4, slots=4)
    b = runner_processes("b", workers=4, slots=4)
    await asyncio.gather(a.ready(), b.ready())
    reason = json.dumps({"log": str(runs), "report": False})
    async with pool.acquire() as conn:
        async with conn.transaction():
            await conn.execute(
                """INSERT INTO monitoring_retraining_integration (model_id, training, metric)
                   SELECT 'm' || i, '{}'::jsonb, 'accuracy' FROM generate_series(1, $1) i""", n)
            for i in range(1, n + 1):
                await queue.enqueue(conn, model_id=f"m{i}", mode="FULL", priority=1 + i % 4, reason=reason)

    async def all_done():
        async with pool.acquire() as conn:
            return await conn.fetchval("SELECT count(*) FROM retrain_jobs WHERE state = 'SUCCEEDED'") == n

    await wait_for(all_done, timeout=120)
    assert a.stop() == 0 and b.stop() == 0
    lines = [line.split() for line in runs.read_text().splitlines()]
    per_job = Counter(job for job, _, _ in lines)
    assert len(per_job) == n and max(per_job.values()) == 1  # no job ran twice
    assert {attempt for _, attempt, _ in lines} == {"1"}
    async with pool.acquire() as conn:
        states = dict(await conn.fetch("SELECT state, count(*) FROM retrain_jobs GROUP BY state"))
        workers = await conn.fetchval("SELECT count(DISTINCT worker) FROM retrain_jobs")
    assert states == {"SUCCEEDED": n}
    assert workers == 2  # both processes took part


async def test_paused_worker_past_its_lease_cannot_complete(pool, database_url, runner_processes, tmp_path):
    runs = tmp_path / "runs.log"
    paused = runner_processes("paused", workers=1, slots=1, lease=1.0)
    await paused.ready()
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO monitoring_retraining_integration (model_id, training, metric) "
                           "VALUES ('m', '{}'::jsonb, 'accuracy')")
        job, _ = await queue.enqueue(conn, model_id="m", mode="FULL", priority=3,
                                     reason=json.dumps({"sleep": 1.5, "report": False, "log": str(runs)}))

    async def running_on_paused():
        async with pool.acquire() as conn:
            row = await queue.get(conn, job["id"])
        return row["state"] == "RUNNING" and row["worker"] == paused.worker_id

    await wait_for(running_on_paused, interval=0.01)
    os.kill(paused.proc.pid, signal.SIGSTOP)  # the runner freezes; its worker process sleeps on

    settings = Settings(database_url=database_url, data_dir=tmp_path, workers=1, job_lease=1.0)
    backend = LocalBackend(1, preload=["closedloop.server.executor.job_kinds"])
    other = JobRunner(settings, pool, database_url, backend=backend, kind=ProbeKind(database_url),
                      worker_id="other", retry_base_s=0.1, poll_interval_s=0.2)
    await other.start()
    try:
        async def finished():
            async with pool.acquire() as conn:
                row = await queue.get(conn, job["id"])
            return row if row["state"] == "SUCCEEDED" else None

        done = await wait_for(finished, timeout=120)
    finally:
        await other.stop()
        backend.shutdown()
    assert done["attempt"] == 2 and done["worker"] == "other"

    os.kill(paused.proc.pid, signal.SIGCONT)

    def noticed():
        return [e for e in paused.events()
                if e.get("event") in ("retrain.completion_fenced", "retrain.job_lease_lost")
                and e.get("job_id") == job["id"]]

    await wait_for(lambda: asyncio.sleep(0, noticed()), timeout=30)
    async with pool.acquire() as conn:
        after = await queue.get(conn, job["id"])
        feedback = await conn.fetchval("SELECT count(*) FROM feedback_loop_metrics WHERE job_id = $1", job["id"])
    for column in ("state", "attempt", "worker", "end_time", "update_time", "progress_message", "error"):
        assert after[column] == done[column], column
    assert feedback == 1
    # Both attempts ran (at-least-once execution); only the lease holder's result was kept.
    assert sorted(line.split()[1] for line in runs.read_text().splitlines()) == ["1", "2"]
    assert paused.stop() == 0
