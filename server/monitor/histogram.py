"""A window's numeric features: exact counts in bins cut at the reference profile's own quantiles.

Every window is judged against ONE reference profile, fixed before its first row arrives, so a window
does not need a general-purpose quantile sketch: it counts its values into bins whose edges are the
reference's quantiles (`BinLayout`: `bins` + 1 edges per feature at evenly spaced ranks, the reference's
exact min and max first and last, the spec's PSI cut points added, float32 values as the reference KLL
holds them, duplicates dropped so a discrete feature gets one edge per value). What a window keeps per
feature (`NumericBlock`, all features of a window in flat arrays):

- `counts`: one integer per bin, slot b holding the values x with edge[b-1] < x <= edge[b] (slot 0: x <=
  the reference min; the last slot: x > the reference max). Exact, and merging partials is a vector add.
- `low` / `high`: the exact sums of (min - x) below the reference min and of (x - max) above its max, so
  the Wasserstein integral over the tails is exact however far a window strays.
- rows, missing, mean and M2 (Chan's parallel update: merging is exact up to float rounding).

Counting a batch is a handful of numpy passes over the whole (features x rows) matrix, no per-feature
calls: each value's bin is found through a uniform grid of `GRID_CELLS_PER_EDGE` cells per edge laid over
[min, max] (`lut`: the first bin of each cell), then corrected exactly by comparing with the few edges
that share the value's cell (`passes` comparisons, at most the most edges any cell holds: 1-3 for smooth
distributions). The grid only says where to start looking; the comparisons make the bin exact.

What judging loses (detectors.py states it per statistic): the window's CDF is exact at the edges and
unknown between them, so KS evaluated at the edges underestimates the sup by at most the largest single
bin's mass (`NumericBlock.bin_mass_bound`), and the Wasserstein integral interpolates inside each bin.
Memory per numeric feature: (edges + 1) x 8 bytes of counts plus six numbers: 1.7 KB at the default 200
bins, whatever the window's size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from closedloop.server.monitor.states import NUMERIC, NumericState, RowCounts

GRID_CELLS_PER_EDGE = 8
FORMAT = "bins-1"


class BinLayout:
    """The bin edges of a window's numeric features and the lookup grid that counts a batch into them.
    One per (reference profile, bins, PSI bins): shared by every window of that version."""

    def __init__(self, edges: Sequence[np.ndarray]) -> None:
        self.edges = [np.asarray(e, dtype=np.float64) for e in edges]
        sizes = np.array([len(e) for e in self.edges], dtype=np.int64)
        self.slots = sizes + 1  # bins per feature: one more than the edges
        self.starts = np.concatenate([[0], np.cumsum(self.slots)[:-1]]).astype(np.int64)
        self.total = int(self.slots.sum())
        self.digest = hashlib.blake2b(b"".join(e.tobytes() for e in self.edges), digest_size=8).hexdigest()
        # Edges padded with +inf at each feature's end: edges_pad[starts[f] + b] is feature f's edge b.
        self.edges_pad = np.concatenate([np.append(e, np.inf) for e in self.edges]) if self.edges else np.empty(0)
        lo = np.array([e[0] for e in self.edges])
        hi = np.array([e[-1] for e in self.edges])
        cells = GRID_CELLS_PER_EDGE * sizes
        span = hi - lo
        self.lo, self.hi = lo, hi
        self._lo = lo.astype(np.float32)[:, None]
        self._scale = np.where(span > 0, cells / np.where(span > 0, span, 1.0), 0.0).astype(np.float32)[:, None]
        self._last_cell = (cells - 1).astype(np.float32)[:, None]
        cell_starts = np.concatenate([[0], np.cumsum(cells)[:-1]]).astype(np.intp)
        self._cell_base = cell_starts[:, None]
        luts, passes = [], 0
        for f, e in enumerate(self.edges):
            cell_of_edge = self._cell(e[None, :], f).ravel().astype(np.int64)
            # lut[c] = edges whose cell is before c: every one of them is < any value in cell c.
            luts.append(self.starts[f] + np.searchsorted(cell_of_edge, np.arange(cells[f]), side="left"))
            passes = max(passes, int(np.bincount(cell_of_edge).max()))
        self._lut = (np.concatenate(luts) if luts else np.empty(0)).astype(np.intp)
        self.passes = passes

    @classmethod
    def for_references(cls, refs: Sequence[NumericState], bins: int, psi_bins: int) -> "BinLayout":
        ranks = np.unique(np.concatenate([np.arange(1, bins) / bins, np.arange(1, psi_bins) / psi_bins]))
        return cls([reference_edges(ref, ranks) for ref in refs])

    def _cell(self, values: np.ndarray, f: int | None = None) -> np.ndarray:
        """Each value's grid cell. Computed in float32 (half the memory traffic): rounding is
        monotone, so the cell is still monotone in the value, and edges go through the same arithmetic."""
        rows = slice(None) if f is None else slice(f, f + 1)
        cell = values.astype(np.float32)
        cell -= self._lo[rows]
        cell *= self._scale[rows]
        np.maximum(cell, 0.0, out=cell)  # (np.clip costs half as much again)
        np.minimum(cell, self._last_cell[rows], out=cell)
        return cell.astype(np.intp)  # truncation = floor on the clipped, non-negative values

    def bin_slots(self, values: np.ndarray) -> np.ndarray:
        """Each value's slot in the flat counts (features x rows in, same shape out); no NaN allowed."""
        idx = self._cell(values)
        idx += self._cell_base
        idx = self._lut[idx]  # (intp indices: numpy converts any other integer index array first)
        for _ in range(self.passes):
            idx += np.take(self.edges_pad, idx) < values
        return idx


def reference_edges(ref: NumericState, ranks: np.ndarray) -> np.ndarray:
    """The reference's min, its quantiles at `ranks`, its max, as bin edges (`as_edges`)."""
    if ref.count == 0:
        return np.zeros(1)
    inner = ref.quantiles(ranks) if len(ranks) else np.empty(0)
    return as_edges(np.concatenate([[ref.sketch.get_min_value()], inner, [ref.sketch.get_max_value()]]))


def as_edges(points: np.ndarray) -> np.ndarray:
    """Points as bin edges: float32 values (as the sketch holds them), sorted and distinct, +0.0 for
    -0.0 so that equal values always share a bin. Whoever reads a window at some of the reference's
    quantiles (detectors.psi) goes through here too, or its points would miss the window's edges."""
    return np.unique(np.asarray(points).astype(np.float32).astype(np.float64) + 0.0)


class NumericBlock:
    """The numeric features of one window (or one partial of it), counted against a `BinLayout`."""

    kind = NUMERIC

    def __init__(self, layout: BinLayout) -> None:
        self.layout = layout
        n = len(layout.edges)
        self.rows = 0
        self.counts = np.zeros(layout.total, dtype=np.int64)
        self.missing = np.zeros(n, dtype=np.int64)
        self.mean = np.zeros(n)
        self.m2 = np.zeros(n)
        self.low = np.zeros(n)
        self.high = np.zeros(n)

    def __len__(self) -> int:
        return len(self.layout.edges)

    def update(self, values: np.ndarray) -> None:
        """Count a (features x rows) float64 matrix already checked (NaN = missing, no infinities)."""
        if values.shape[0] == 0 or values.shape[1] == 0:  # no numeric feature watched, or no rows
            self.rows += values.shape[1]
            return
        nan = np.isnan(values)
        if nan.any():
            missing = nan.sum(axis=1)
            present = values.shape[1] - missing
            counted = np.where(nan, -np.inf, values)  # -inf lands in slot 0; taken back out below
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.where(present > 0, np.nansum(values, axis=1) / np.maximum(present, 1), 0.0)
            dev = np.where(nan, 0.0, values - mean[:, None])
        else:
            missing = np.zeros(len(values), dtype=np.int64)
            present = np.full(len(values), values.shape[1], dtype=np.int64)
            counted = values
            mean = values.mean(axis=1)
            dev = values - mean[:, None]
        layout = self.layout
        counts = np.bincount(layout.bin_slots(counted).ravel(), minlength=layout.total)
        if counted is not values:
            counts[layout.starts] -= missing
        self.counts += counts
        self._add_moments(present, mean, np.einsum("ij,ij->i", dev, dev))
        # Tail sums, only for the features with values beyond the reference's min or max (rare).
        for f in np.flatnonzero(counts[layout.starts] > 0):
            row = values[f]
            self.low[f] += float((layout.lo[f] - row[row < layout.lo[f]]).sum())
        for f in np.flatnonzero(counts[layout.starts + layout.slots - 1] > 0):
            row = values[f]
            self.high[f] += float((row[row > layout.hi[f]] - layout.hi[f]).sum())
        self.rows += values.shape[1]
        self.missing += missing

    def _add_moments(self, n: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> None:
        # Chan et al., per feature: combine (count, mean, M2) of two disjoint parts; before counts grow.
        # (Where a feature has no values at all, n = 0 and m2 = 0, so both updates add 0.)
        have = self.rows - self.missing
        weight = n / np.maximum(have + n, 1)
        delta = mean - self.mean
        self.mean = self.mean + delta * weight
        self.m2 = self.m2 + m2 + delta * delta * have * weight

    def merge(self, other: "NumericBlock") -> None:
        """Add another partial of the same window (counted over the same edges)."""
        if other.layout.digest != self.layout.digest:
            raise ValueError("cannot merge numeric partials counted over other bin edges")
        self._add_moments(other.rows - other.missing, other.mean, other.m2)
        self.counts += other.counts
        self.low += other.low
        self.high += other.high
        self.rows += other.rows
        self.missing += other.missing

    def absorb_sketch(self, f: int, state: NumericState) -> None:
        """Fold feature `f` of an old-format (KLL) partial in: its bin counts from the sketch's CDF at the
        edges (within the sketch's rank error), its tail sums estimated as if the values beyond the
        reference's min/max were spread evenly up to the sketch's own min/max. The caller adds the
        partial's rows once, after its features (`rows` must not have grown yet)."""
        edges = self.layout.edges[f]
        count = state.count
        if count:
            cum = np.round(state.cdf(edges) * count)
            at = self.layout.starts[f]
            self.counts[at:at + len(edges) + 1] += np.diff(np.concatenate([[0.0], cum, [count]])).astype(np.int64)
            self.low[f] += cum[0] * max(edges[0] - state.sketch.get_min_value(), 0.0) / 2
            self.high[f] += (count - cum[-1]) * max(state.sketch.get_max_value() - edges[-1], 0.0) / 2
        n, mean, m2 = np.zeros(len(self), dtype=np.int64), self.mean.copy(), np.zeros(len(self))
        n[f], mean[f], m2[f] = count, state.mean, state.m2
        self._add_moments(n, mean, m2)
        self.missing[f] += state.missing

    def feature_counts(self, f: int) -> np.ndarray:
        at = self.layout.starts[f]
        return self.counts[at:at + self.layout.slots[f]]

    def feature(self, f: int) -> "BinnedFeature":
        return BinnedFeature(self, f)

    def to_dict(self) -> dict:
        return {"kind": FORMAT, "digest": self.layout.digest, "rows": self.rows,
                "counts": self.counts.astype("<i8").tobytes(), "missing": self.missing.astype("<i8").tobytes(),
                "mean": self.mean.astype("<f8").tobytes(), "m2": self.m2.astype("<f8").tobytes(),
                "low": self.low.astype("<f8").tobytes(), "high": self.high.astype("<f8").tobytes()}

    @classmethod
    def from_dict(cls, doc: dict, layout: BinLayout) -> "NumericBlock":
        """Read a stored block; ValueError when it was counted over other edges than `layout`'s."""
        block = cls(layout)
        if doc["digest"] != layout.digest:
            raise ValueError("a partial counted over other bin edges: the spec's bins changed while the "
                             "window was open")
        block.rows = int(doc["rows"])
        block.counts = np.frombuffer(doc["counts"], dtype="<i8").astype(np.int64)
        block.missing = np.frombuffer(doc["missing"], dtype="<i8").astype(np.int64)
        for name in ("mean", "m2", "low", "high"):
            setattr(block, name, np.frombuffer(doc[name], dtype="<f8").astype(np.float64))
        return block


class BinnedFeature(RowCounts):
    """One numeric feature of a window, read from its block: what the detectors judge."""

    kind = NUMERIC

    def __init__(self, block: NumericBlock, f: int) -> None:
        self.block, self.f = block, f
        self.edges = block.layout.edges[f]

    @property
    def counts(self) -> np.ndarray:
        return self.block.feature_counts(self.f)

    @property
    def rows(self) -> int:
        return self.block.rows

    @property
    def missing(self) -> int:
        return int(self.block.missing[self.f])

    @property
    def mean(self) -> float:
        return float(self.block.mean[self.f])

    @property
    def std(self) -> float:
        return float(np.sqrt(self.block.m2[self.f] / self.count)) if self.count else 0.0

    @property
    def low(self) -> float:
        return float(self.block.low[self.f])

    @property
    def high(self) -> float:
        return float(self.block.high[self.f])

    def cdf_at_edges(self) -> np.ndarray:
        """Share of values <= each edge: exact."""
        return np.cumsum(self.counts)[:-1] / max(self.count, 1)

    def cdf(self, points: np.ndarray) -> np.ndarray:
        """Share of values <= each point; the points must be edges of this feature."""
        at = np.searchsorted(self.edges, points)
        if len(points) and (at.max() >= len(self.edges) or not np.array_equal(self.edges[at], points)):
            raise ValueError("a window's CDF is known only at its bin edges")
        return self.cdf_at_edges()[at]
