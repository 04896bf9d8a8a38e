"""Monitoring closes the loop on its own, with real training workers: the trainer profiles every version,
drifting observations raise a drift alert -> the default rule -> a full retrain -> promotion -> the next
windows are judged against the new version's profile and are quiet; degraded outcomes raise a performance
alert -> an incremental retrain. And `closedloop models profile` rebuilds a profile for an old version."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest

from closedloop import AsyncClient, observation_batch, outcome_batch
from closedloop.server.app import create_server
from closedloop.server.cli import main
from closedloop.server.executor.trainer import load_training_window
from closedloop.server.monitor.profile import ReferenceProfile
from closedloop.server.store import monitoring as monitoring_store
from closedloop.v1 import alert_pb2, common_pb2, monitor_pb2, retrain_pb2

from .conftest import make_settings
from .test_retrain_loop import MODEL, finish

WATCHED = {**MODEL, "monitoring": {"window_rows": "2000", "min_rows": "500"}}
SHIFTED = ("order_flow", "sentiment", "carry")


@pytest.fixture
async def live(database_url, tmp_path):
    srv, port = await create_server(make_settings(database_url, tmp_path, run_workers=True, workers=1,
                                                  job_lease=10.0))
    try:
        async with AsyncClient(f"127.0.0.1:{port}", timeout=60) as client:
            yield srv, client
    finally:
        await srv.stop(2)


def training_rows(version: int):
    """The rows the trainer fitted `version` on (the same call the trainer makes)."""
    X, _, _, n_train = load_training_window(MODEL["training"], version - 1)
    return X.iloc[:n_train]


def sample(frame, rows: int, rng, shift: float = 0.0):
    picked = frame.iloc[rng.integers(0, len(frame), rows)]
    return {c: picked[c].to_numpy(dtype=float) + (shift * frame[c].std() if c in SHIFTED else 0.0)
            for c in frame.columns}


async def log(client, columns: dict, size: int = 500):
    rows = len(next(iter(columns.values())))
    await client.log_observations([observation_batch("fx-live", {c: v[i:i + size] for c, v in columns.items()})
                                   for i in range(0, rows, size)])


async def test_drift_to_retrain_to_promotion_then_quiet_and_performance_to_incremental(live):
    srv, client = live
    rng = np.random.default_rng(12)
    await client.register_model(WATCHED)
    first = await finish(client, (await client.submit_retrain("fx-live", reason="initial")).id)
    assert first.promoted and first.new_version == 1
    async with srv.pool.acquire() as conn:
        stored = await monitoring_store.profile_summary(conn, "fx-live", 1)
    reference = training_rows(1)
    assert stored["origin"] == "trainer" and stored["summary"]["rows"] == len(reference)
    assert set(stored["summary"]["features"]) == set(reference.columns)
    assert stored["summary"]["metric"] == "accuracy"
    assert stored["summary"]["holdout_metric"] == pytest.approx(first.challenger_metric)

    # The market moves: three of eight inputs shift by a training std.
    await log(client, sample(reference, 2000, rng, shift=1.0))
    [window] = (await client.drift_report("fx-live")).windows
    assert sorted(f.feature for f in window.features if f.drifted) == sorted(SHIFTED)
    drift = await client.get_alert(window.alert_id)
    assert drift.type == "drift" and drift.metrics["drift_score"] > 0.25
    [action] = drift.actions
    assert action.rule == "drift_auto_retrain" and action.state == alert_pb2.ACTION_STATE_QUEUED
    job = await finish(client, action.job_id)
    assert job.state == retrain_pb2.JOB_STATE_SUCCEEDED and job.promoted and job.new_version == 2

    # New rows count for version 2 and are judged against its own training data: quiet.
    for _ in range(100):
        if (await client.get_model("fx-live")).current_version == 2:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(srv.monitor.engine.model_ttl)  # the cached current version is at most this old
    await log(client, sample(training_rows(2), 4000, rng))
    after = [w for w in (await client.drift_report("fx-live", version=2)).windows]
    assert len(after) == 2 and all(w.version == 2 and w.judged and not w.alert_id for w in after)
    assert all(not any(f.drifted for f in w.features) for w in after)

    # Outcomes go wrong: realised accuracy far under the holdout's -> performance alert -> incremental.
    truth = rng.integers(0, 2, 1000).astype(float)
    wrong = np.where(rng.random(1000) < 0.8, 1 - truth, truth)
    await client.log_outcomes([outcome_batch("fx-live", truth[i:i + 250], wrong[i:i + 250]) for i in range(0, 1000, 250)])
    [perf] = [w for w in (await client.drift_report("fx-live")).windows if w.kind == monitor_pb2.WINDOW_KIND_OUTCOMES]
    assert perf.version == 2 and perf.performance.drop > 0.35
    alert = await client.get_alert(perf.alert_id)
    assert alert.type == "performance" and alert.severity == common_pb2.SEVERITY_CRITICAL
    [action] = alert.actions
    assert action.rule == "performance_auto_retrain"
    incremental = await finish(client, action.job_id)
    assert incremental.mode == common_pb2.RETRAIN_MODE_INCREMENTAL
    assert incremental.state == retrain_pb2.JOB_STATE_SUCCEEDED


async def test_models_profile_rebuilds_the_profile_of_an_old_version(live, database_url, capsys):
    srv, client = live
    await client.register_model(MODEL)
    assert (await finish(client, (await client.submit_retrain("fx-live")).id)).new_version == 1
    async with srv.pool.acquire() as conn:
        trained = await monitoring_store.get_profile(conn, "fx-live", 1)
        await conn.execute("DELETE FROM model_profiles WHERE model_id = 'fx-live'")  # as before monitoring
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.log_observations([observation_batch("fx-live", {"order_flow": [0.1]})])
    assert "closedloop models profile fx-live --version 1" in info.value.details()

    code = await asyncio.to_thread(main, ["models", "profile", "fx-live", "--database-url", database_url])
    assert code == 0 and "profiled fx-live version 1" in capsys.readouterr().out
    async with srv.pool.acquire() as conn:
        rebuilt = await monitoring_store.profile_summary(conn, "fx-live", 1)
        data = await monitoring_store.get_profile(conn, "fx-live", 1)
    assert rebuilt["origin"] == "backfill"
    # The same rows and predictions: equal counts and moments (KLL's compaction is randomised, so the
    # sketches agree within their rank error rather than byte for byte).
    before, after = ReferenceProfile.from_bytes(trained), ReferenceProfile.from_bytes(data)
    assert after.summary() == before.summary()
    for name, state in before.features.items():
        assert (after.features[name].count, after.features[name].mean) == pytest.approx((state.count, state.mean))
    assert after.prediction.mean == pytest.approx(before.prediction.mean)
    assert await asyncio.to_thread(main, ["models", "profile", "nobody", "--database-url", database_url]) == 1
