"""The ingest path's stage histograms (loop/stage_timings.py) and what the group commit records in them."""

from __future__ import annotations

import asyncio

import pytest

from closedloop.server.loop.group_commit import GroupCommit
from closedloop.server.loop.stage_timings import Histogram, StageTimings


def test_histogram_quantiles_are_within_a_bucket_of_the_true_values():
    h = Histogram()
    for ms in range(1, 1001):  # 1 ms .. 1 s
        h.add(ms / 1000)
    s = h.summary()
    assert s["count"] == 1000 and s["max"] == 1.0
    for q, true in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        assert true <= s[q] <= true * 1.1, (q, s[q])
    assert abs(s["mean"] - 0.5005) < 1e-9


def test_empty_histogram_and_tiny_values():
    h = Histogram()
    assert h.quantile(0.99) == 0.0
    h.add(0.0)
    h.add(1e-9)
    assert h.summary()["p99"] <= 1e-6


def test_slow_requests_are_kept_apart_and_reset_clears():
    t = StageTimings(slow_after=0.010)
    t.add_batch([0.001, 0.008], 0.002, 0.0001)  # one fast, one slow: 10.1 ms in all, mostly queue
    snap = t.snapshot()
    assert snap["all"]["total"]["count"] == 2 and snap["all"]["write"]["count"] == 2
    assert snap["all"]["write"]["mean"] == pytest.approx(0.002)
    assert snap["slow"]["total"]["count"] == 1 and snap["slow"]["reply"]["count"] == 1
    assert snap["slow"]["queue"]["max"] == 0.008
    assert "lock_wait" not in snap["all"]  # nothing recorded, nothing shown
    t.reset()
    assert t.snapshot() == {"all": {}, "slow": {}}


async def test_group_commit_records_every_request_and_batch():
    async def write(items):
        await asyncio.sleep(0.001)
        return [i for i in items]

    timings = StageTimings()
    gc = GroupCommit(write, timings=timings)
    await gc.start()
    try:
        await asyncio.gather(*[gc.submit(i) for i in range(30)])
    finally:
        await gc.stop()
    snap = timings.snapshot()["all"]
    assert snap["total"]["count"] == snap["queue"]["count"] == snap["reply"]["count"] == 30
    assert snap["batch_size"]["count"] == gc.batches_committed
    assert snap["write"]["p50"] >= 0.001 * 0.9  # the write's own sleep is in it
