"""Small pure parts of the loop: the retrain merge, age-alert grading, the group commit, driver errors."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from closedloop.dsl import ActionSpec
from closedloop.server.db.pool import database_error
from closedloop.server.errors import AlreadyExists, ServerError, Unavailable
from closedloop.server.loop.age_sweep import age_severity
from closedloop.server.loop.decide import merge_retrains
from closedloop.server.loop.group_commit import GroupCommit


def test_merge_retrains_full_beats_incremental_highest_priority_wins():
    specs = [ActionSpec("retrain", "incremental", 1), ActionSpec("record"), ActionSpec("retrain", "full", None),
             ActionSpec("retrain", "incremental", 4)]
    assert merge_retrains(specs) == ("FULL", 4)
    assert merge_retrains([ActionSpec("retrain", "incremental", None)]) == ("INCREMENTAL", 2)
    assert merge_retrains([ActionSpec("notify")]) is None


@pytest.mark.parametrize("ratio, severity", [(1.0, 1), (1.49, 1), (1.5, 2), (1.99, 2), (2.0, 3), (3.9, 3),
                                             (4.0, 4), (40.0, 4)])
def test_age_alerts_are_graded_by_how_far_past_the_threshold(ratio, severity):
    assert age_severity(ratio * 86400 * 30, 86400 * 30) == severity


async def test_group_commit_batches_waiting_requests_and_resolves_each():
    batches = []

    async def write(items):
        batches.append(list(items))
        await asyncio.sleep(0)
        return [ValueError(i) if i == 3 else i * 10 for i in items]

    gc = GroupCommit(write, max_batch=64, linger=0.001)
    await gc.start()
    try:
        results = await asyncio.gather(*[gc.submit(i) for i in range(20)], return_exceptions=True)
    finally:
        await gc.stop()
    assert [r for i, r in enumerate(results) if i != 3] == [i * 10 for i in range(20) if i != 3]
    assert isinstance(results[3], ValueError)
    assert sorted(i for b in batches for i in b) == list(range(20))
    assert len(batches) < 20 and gc.batches_committed == len(batches)


async def test_group_commit_fails_the_whole_batch_with_what_write_raised():
    async def write(items):
        raise Unavailable("down")

    gc = GroupCommit(write)
    await gc.start()
    try:
        with pytest.raises(Unavailable):
            await gc.submit(1)
    finally:
        await gc.stop()
    assert gc.batches_committed == 0


async def test_group_commit_answers_unavailable_past_its_deadline_and_still_writes_late_batches():
    """Behind a hung write, the item in it and the items queued behind it fail with UNAVAILABLE once
    their deadline has passed, while the write still hangs; the hung batch, when it ends, is still
    written (its rows are committed: the callers retry by idempotency key)."""
    release = asyncio.Event()
    written = []

    async def write(items):
        if 0 in items:
            await release.wait()
        written.extend(items)
        return list(items)

    gc = GroupCommit(write, writers=1, deadline=0.2)
    await gc.start()
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        hung = asyncio.ensure_future(gc.submit(0))
        await asyncio.sleep(0.05)
        behind = [asyncio.ensure_future(gc.submit(i)) for i in (1, 2)]
        results = await asyncio.gather(hung, *behind, return_exceptions=True)
        waited = loop.time() - started
        assert all(isinstance(r, Unavailable) and "0.2 s" in str(r) for r in results), results
        assert waited >= 0.2 and not release.is_set()  # not before the deadline; the write still hangs
        release.set()
        assert await gc.submit(8) == 8  # the writer is free again: answered as usual
    finally:
        release.set()
        await gc.stop()
    assert 0 in written and 8 in written


async def test_group_commit_without_a_deadline_waits_as_long_as_the_write():
    async def write(items):
        await asyncio.sleep(0.3)
        return list(items)

    gc = GroupCommit(write)
    await gc.start()
    try:
        assert await gc.submit(5) == 5
    finally:
        await gc.stop()


def test_driver_errors_are_translated_in_one_place():
    assert isinstance(database_error(ConnectionRefusedError()), Unavailable)
    assert isinstance(database_error(asyncpg.exceptions.UniqueViolationError("dup")), AlreadyExists)
    assert database_error(ValueError("a bug")) is None
    assert issubclass(Unavailable, ServerError)
