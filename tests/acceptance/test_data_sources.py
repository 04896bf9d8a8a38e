"""The data-source boundary on a real server with its training workers (issue 10, points 1-3), and a
RegisterModel whose spec check waits on the helper process without stopping the server (point 6)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from closedloop import AsyncClient
from closedloop.server.app import create_server
from closedloop.server.executor import training_spec
from closedloop.v1 import retrain_pb2

from .conftest import make_settings
from .helpers import synthetic_model

FEATURES_QUERY = "SELECT t, f1, f2, label FROM prices ORDER BY t"


def as_role(url: str, role: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{role}@{parts.netloc.rpartition('@')[2]}"))


def sql_model(model_id: str, source: str, query: str = FEATURES_QUERY) -> dict:
    return {"model_id": model_id, "enabled": True,
            "training": {"estimator": "linear_model.LogisticRegression", "sql": {"source": source, "query": query},
                         "target": "label", "time_column": "t", "metric": "accuracy"}}


@pytest.fixture
async def reader(database_url):
    """A prices table, and a login role that may SELECT it and nothing else."""
    role = "reader_" + uuid.uuid4().hex[:8]
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("CREATE TABLE prices (t timestamptz, f1 double precision, f2 double precision, label int)")
        await conn.execute("INSERT INTO prices SELECT now() + i * interval '1 minute', i % 3, (i % 7) * 0.1,"
                           " (i % 3 = 0)::int FROM generate_series(1, 300) i")
        await conn.execute(f'CREATE ROLE "{role}" LOGIN')
        await conn.execute(f'GRANT SELECT ON prices TO "{role}"')
        yield role
        await conn.execute(f'DROP OWNED BY "{role}"')
        await conn.execute(f'DROP ROLE "{role}"')
    finally:
        await conn.close()


@pytest.fixture
async def training_server(database_url, reader, tmp_path):
    """A server with one training worker and a data-sources file: `prices` as the read-only role,
    `admin` as the database's superuser (which must be refused at training time)."""
    config = tmp_path / "sources.toml"
    config.write_text(f'[sql.prices]\ndsn = "{as_role(database_url, reader)}"\n'
                      f'[sql.admin]\ndsn = "{database_url}"\n')
    (tmp_path / "datasets").mkdir()
    srv, port = await create_server(make_settings(database_url, tmp_path, run_workers=True, workers=1,
                                                  data_sources=config))
    try:
        async with AsyncClient(f"127.0.0.1:{port}", timeout=30.0, retries=2) as client:
            yield client
    finally:
        await srv.stop(grace=1.0)


async def finished(client, job) -> retrain_pb2.RetrainJob:
    async for job in client.watch_job(job.id):
        pass
    return job


async def test_named_sql_sources_train_as_the_reader_and_refuse_the_superuser(training_server, tmp_path):
    client = training_server
    await client.register_model(sql_model("fx-sql", "prices"))
    job = await finished(client, await client.submit_retrain("fx-sql", reason="first"))
    assert job.state == retrain_pb2.JOB_STATE_SUCCEEDED, job.error
    assert job.new_version == 1

    # The reproducer, through a source the operator configured with the superuser's DSN:
    # registration accepts the name, the worker refuses the role before the query runs.
    marker = tmp_path / "pwned"
    await client.register_model(sql_model("fx-copy", "admin", f"COPY (SELECT 1) TO PROGRAM 'touch {marker}'"))
    job = await finished(client, await client.submit_retrain("fx-copy", reason="reproducer"))
    assert job.state == retrain_pb2.JOB_STATE_FAILED and "superuser" in job.error
    assert job.attempt == 1  # a permanent error: not retried
    assert "postgresql://" not in job.error and not marker.exists()

    # A client cannot name a DSN at all: only configured sources.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.register_model(sql_model("fx-other", "postgresql://postgres@localhost/postgres"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "sql.source" in err.value.details()


async def test_a_symlink_out_of_the_roots_fails_the_job_without_echoing_the_file(training_server, tmp_path):
    client = training_server
    secret = tmp_path / "secret.csv"
    secret.write_text("SECRET_API_KEY,label\nabc,1\n")
    model = synthetic_model("fx-file")
    model["training"] = {"estimator": "linear_model.LogisticRegression", "file": {"path": "prices.csv"},
                         "target": "label", "metric": "accuracy"}
    await client.register_model(model)  # the file need not exist yet
    os.symlink(secret, tmp_path / "datasets" / "prices.csv")  # ... and then leads out of the root
    job = await finished(client, await client.submit_retrain("fx-file", reason="escape"))
    assert job.state == retrain_pb2.JOB_STATE_FAILED and job.attempt == 1
    assert "not inside the server's data roots" in job.error and "SECRET" not in job.error


def hold_the_checker(release: str, limit_s: float) -> str:
    """Run in the estimator-check helper process: keep it busy until `release` exists."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if os.path.exists(release):
            return "released"
        time.sleep(0.01)
    return "timed out"


async def test_health_answers_while_register_model_waits_for_its_spec_check(server, client, tmp_path):
    release = tmp_path / "release"
    # While the helper is busy, every spec check waits. The server must keep serving meanwhile:
    # were the wait blocking its event loop, the health check below could not be answered and
    # the helper would only be freed by its time limit.
    checker = training_spec._estimator_checker()
    held = asyncio.wrap_future(checker.submit(hold_the_checker, str(release), 20.0))
    registers = [asyncio.create_task(client.register_model(synthetic_model(f"fx-{i}"))) for i in range(3)]
    async with grpc.aio.insecure_channel(server.test_target) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=15)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert not any(r.done() for r in registers)
    release.touch()
    assert await held == "released"
    models = await asyncio.gather(*registers)
    assert sorted(m.model_id for m in models) == ["fx-0", "fx-1", "fx-2"]
