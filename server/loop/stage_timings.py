"""Where an alert's time goes on the ingest path: a latency histogram per stage.

The group commit and the decision transaction record, per request or per batch, how long each stage
took (see STAGES). Every request is recorded in the `all` histograms; a request slower than
`slow_after` seconds from submit to reply is also recorded, stage by stage, in the `slow` ones, so
the tail can be read apart from the median: a slow request that spent its time in `queue` waited
for a writer, one that spent it in `reply` waited for the event loop.

Recording is a few float operations and one list increment per stage, cheap enough to stay on in
production. Histograms have fixed log-scale buckets (about 9% wide), so memory does not grow with
the number of requests.
"""

from __future__ import annotations

import math
import threading

# Per request: submit -> its batch taken by a writer (waiting for a writer, lingering included),
# its batch written, the write's end -> the batch's callers running again (event-loop lag), submit -> reply.
# Per batch: waiting for a free writer, the linger, evaluating the rules, waiting for the decision
# locks (BEGIN with the advisory locks), the rest of the transaction up to COMMIT, COMMIT itself (for
# a batch no rule matched: its one INSERT, which commits on its own), and the batch's size (a count).
# A decision batch written the optimistic way (ingest.py) records instead its unlocked state read and
# its one write statement (locks, check, writes, commit); an optimistic attempt refused because the
# state had changed records its time as `conflict` before the batch goes the locked way.
STAGES = ("queue", "write", "reply", "total",
          "writer_wait", "linger", "evaluate", "lock_wait", "statements", "commit",
          "state_read", "decide_write", "conflict", "batch_size")

_STEPS_PER_DOUBLING = 8
_MIN = 1e-6  # values are seconds (batch_size aside); everything under a microsecond lands in bucket 0
_BUCKETS = 8 * 40  # up to 2**40 µs: more than any latency


class Histogram:
    """Counts in log-scale buckets; quantiles are read from bucket upper bounds (within ~9%)."""

    __slots__ = ("counts", "count", "total", "max")

    def __init__(self) -> None:
        self.counts = [0] * _BUCKETS
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, value: float, times: int = 1) -> None:
        """Record `value`, `times` times (a batch's requests share their write and reply times)."""
        index = 0 if value <= _MIN else min(_BUCKETS - 1, int(math.log2(value / _MIN) * _STEPS_PER_DOUBLING) + 1)
        self.counts[index] += times
        self.count += times
        self.total += value * times
        if value > self.max:
            self.max = value

    def quantile(self, q: float) -> float:
        if self.count == 0:
            return 0.0
        rank = q * self.count
        seen = 0
        for index, n in enumerate(self.counts):
            seen += n
            if seen >= rank and n:
                return min(self.max, _MIN * 2 ** (index / _STEPS_PER_DOUBLING))
        return self.max

    def summary(self) -> dict:
        return {"count": self.count, "mean": self.total / self.count if self.count else 0.0,
                "p50": self.quantile(0.5), "p90": self.quantile(0.9), "p99": self.quantile(0.99),
                "p999": self.quantile(0.999), "max": self.max}


class StageTimings:
    """Histograms per stage, for all requests and for slow ones (see the module docstring)."""

    def __init__(self, slow_after: float = 0.010) -> None:
        self.slow_after = slow_after
        self._lock = threading.Lock()  # snapshot() may run in another thread (a metrics endpoint)
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.all = {stage: Histogram() for stage in STAGES}
            self.slow = {stage: Histogram() for stage in STAGES}

    def add(self, stage: str, seconds: float) -> None:
        self.all[stage].add(seconds)

    def add_batch(self, queues: list[float], write: float, reply: float) -> None:
        """The requests of one batch: each its own queue time, and the batch's write and reply times.
        Requests that took `slow_after` or more from submit to reply go in `slow` too."""
        slow = [q for q in queues if q + write + reply >= self.slow_after]
        for kind, waits in (("all", queues), ("slow", slow)):
            if not waits:
                continue
            hists = self.all if kind == "all" else self.slow
            hists["write"].add(write, len(waits))
            hists["reply"].add(reply, len(waits))
            queue, total = hists["queue"], hists["total"]
            for q in waits:
                queue.add(q)
                total.add(q + write + reply)

    def snapshot(self) -> dict:
        """{"all": {stage: summary}, "slow": {...}}; stages nothing was recorded for are left out."""
        with self._lock:
            return {kind: {stage: h.summary() for stage, h in hists.items() if h.count}
                    for kind, hists in (("all", self.all), ("slow", self.slow))}
