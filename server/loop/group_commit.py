"""Group commit: many concurrent requests share one write, so the database sees few large commits.

`GroupCommit` knows nothing about what is written. Callers `submit()` items; a batcher task takes
whatever is waiting (up to `max_batch`) and calls the `write` function it was given on the whole
batch; `write` returns one result per item (an Exception instance for an item that failed on its
own), and each caller's future resolves with its result. If `write` raises, every item of the
batch fails with that exception, so `write` should raise the error its callers are meant to see.

Adaptive batching: while one batch is in the database the next one fills. A second writer joins
only when a backlog builds up (on a light load it would only split the batches), and under heavy
load the batcher lingers `linger` seconds before taking a batch. So the batch size follows the
load: one item per commit when idle, tens to hundreds under pressure. `max_pending` bounds memory:
submit() waits while that many items are in flight.

Every item's time is recorded by stage in `timings` (stage_timings.py): its wait in the queue, its
batch's write, and the event-loop lag between the write's end and the batch's callers running again.
An item holds its place in `max_pending` until its batch is written, even if its caller stopped
waiting (a timeout cancels the future): behind a hung database the queue stays bounded.

`deadline`: an item not written after that many seconds (behind a hung database) fails with
UNAVAILABLE; its batch, if it is written later, still commits it (the caller retries by its
idempotency key). One watchdog checks every item a few times per deadline, instead of a timer per
item: arming and cancelling a timer for every request cost ~6 us of the event loop's time each.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Awaitable, Callable, Generic, Sequence, TypeVar

from ..errors import Unavailable
from .stage_timings import StageTimings

T = TypeVar("T")
R = TypeVar("R")

# Linger only when this many requests were in the last batch or are waiting now; a second writer
# starts when this many wait behind a busy one (measured with 2: smaller batches cost 16% of capacity).
LINGER_FROM = 8
# The watchdog of `deadline` looks this many times per deadline: an item fails between 1 and 1.25
# deadlines after its submission.
DEADLINE_CHECKS = 4


class _Ticket:
    """When an item was submitted and taken into a batch (perf_counter seconds)."""

    __slots__ = ("submitted", "taken")

    def __init__(self, submitted: float) -> None:
        self.submitted = submitted
        self.taken = 0.0


class GroupCommit(Generic[T, R]):
    def __init__(self, write: Callable[[list[T]], Awaitable[Sequence[R | Exception]]], *, max_batch: int = 512,
                 writers: int = 2, max_pending: int = 8192, linger: float = 0.002, name: str = "group-commit",
                 timings: StageTimings | None = None, deadline: float | None = None) -> None:
        self.write = write
        self.timings = timings or StageTimings()
        self.max_batch = max_batch
        self.max_writers = writers
        self.linger = linger
        self.name = name
        self.batches_committed = 0  # batches whose write returned (for metrics and tests)
        self._last_batch_size = 0
        self._queue: asyncio.Queue[tuple[T, asyncio.Future, _Ticket]] = asyncio.Queue()
        self._writer_done = asyncio.Event()
        self._capacity = asyncio.Semaphore(max_pending)
        self._batcher: asyncio.Task | None = None
        self._inflight: set[asyncio.Task] = set()
        self.deadline = deadline
        self._open: deque[tuple[float, asyncio.Future]] = deque()  # submitted, in order (with a deadline)
        self._watchdog: asyncio.Task | None = None

    async def start(self) -> None:
        self._batcher = asyncio.create_task(self._run(), name=self.name)
        if self.deadline is not None:
            self._watchdog = asyncio.create_task(self._expire_overdue(), name=f"{self.name}-deadline")

    async def stop(self) -> None:
        """Finish what was submitted, then stop."""
        while not self._queue.empty() or self._inflight:
            await asyncio.sleep(0.01)
        for task in (self._batcher, self._watchdog):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def submit(self, item: T) -> R:
        """Queue an item and wait until its batch is written (or failed)."""
        return await (await self.submit_later(item))

    async def submit_later(self, item: T) -> asyncio.Future:
        """Queue an item once there is room; returns the future of its result without waiting for it."""
        await self._capacity.acquire()
        future = asyncio.get_running_loop().create_future()
        submitted = time.perf_counter()
        self._queue.put_nowait((item, future, _Ticket(submitted)))
        if self.deadline is not None:
            opened = self._open
            while opened and opened[0][1].done():  # answered already: keeps the deque short
                opened.popleft()
            opened.append((submitted, future))
        return future

    async def _expire_overdue(self) -> None:
        """Fails the items waiting longer than `deadline`. Items are submitted in time order, so the
        oldest unanswered one is at the front: the scan stops at the first that is not overdue."""
        assert self.deadline is not None
        while True:
            await asyncio.sleep(self.deadline / DEADLINE_CHECKS)
            cutoff = time.perf_counter() - self.deadline
            opened = self._open
            while opened and (opened[0][1].done() or opened[0][0] <= cutoff):
                _, future = opened.popleft()
                if not future.done():
                    future.set_exception(Unavailable(f"the database did not answer within {self.deadline:g} s"))

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            waited = time.perf_counter()
            # A second writer only starts when a backlog builds up behind the first: two writers
            # taking turns on a light load would just halve every batch.
            while not (len(self._inflight) == 0 or (len(self._inflight) < self.max_writers
                                                   and self._queue.qsize() + 1 >= LINGER_FROM)):
                self._writer_done.clear()
                try:
                    await asyncio.wait_for(self._writer_done.wait(), self.linger)
                except asyncio.TimeoutError:
                    pass
            lingered = time.perf_counter()
            self.timings.add("writer_wait", lingered - waited)
            if self._queue.qsize() + 1 >= LINGER_FROM or self._last_batch_size >= LINGER_FROM:
                # Under heavy load, wait a moment for the RPCs being decoded right now: tens of
                # items per commit instead of a few. Under light or moderate load the writer goes at
                # once, so an item pays no delay when there is little to gain. Skipping it after a
                # wait for a writer was measured (bench/README.md, loop): p99 at 80% load fell, but
                # smaller batches cost ~65 us of CPU per alert and 10-15% of capacity.
                await asyncio.sleep(self.linger)
            batch = [first]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            taken = time.perf_counter()
            self.timings.add("linger", taken - lingered)
            self.timings.add("batch_size", len(batch))
            for _, _, ticket in batch:
                ticket.taken = taken
            self._last_batch_size = len(batch)
            task = asyncio.create_task(self._write_batch(batch))
            self._inflight.add(task)
            task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task) -> None:
        self._inflight.discard(task)
        self._writer_done.set()

    async def _write_batch(self, batch: list[tuple[T, asyncio.Future, _Ticket]]) -> None:
        try:
            results = await self.write([item for item, _, _ in batch])
        except asyncio.CancelledError:
            self._settle(batch)
            _fail(batch, Unavailable("the server is stopping"))
            raise
        except Exception as exc:  # noqa: BLE001 - the write function chose the error its callers see
            self._settle(batch)
            _fail(batch, exc)
            return
        self.batches_committed += 1
        written = self._settle(batch)
        for (_, future, _), result in zip(batch, results):
            if future.done():
                continue  # its caller stopped waiting (a timeout)
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
        # Scheduled behind the wake-ups of the batch's callers, so it runs once they all have.
        asyncio.get_running_loop().call_soon(self._replied, batch, written)

    def _settle(self, batch: list[tuple[T, asyncio.Future, _Ticket]]) -> float:
        """The batch left the writer: its items free their places; returns the time it did."""
        for _ in batch:
            self._capacity.release()
        return time.perf_counter()

    def _replied(self, batch: list[tuple[T, asyncio.Future, _Ticket]], written: float) -> None:
        taken = batch[0][2].taken
        self.timings.add_batch([taken - ticket.submitted for _, _, ticket in batch], written - taken,
                               time.perf_counter() - written)


def _fail(batch: list[tuple[object, asyncio.Future, _Ticket]], exc: Exception) -> None:
    for _, future, _ in batch:
        if not future.done():
            future.set_exception(exc)
