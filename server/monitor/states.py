"""Mergeable per-feature state: what a reference profile and an observation window keep per column.

Two kinds, chosen by the column's values:

- `NumericState` (numbers; NaN means missing), a reference profile's numeric feature: an Apache
  DataSketches KLL quantile sketch plus exact row/missing counts and the mean and variance (Chan's
  parallel update). KLL because it is the mergeable quantile sketch with a proven, documented rank error
  that depends only on `k` (`rank_error`), fixed memory in `k` that grows only with log(n), and a stable
  binary format (it lives in a PostgreSQL bytea). We keep the `float` flavour: drift needs ranks, not the
  8th significant digit, and it halves the bytes. A window's numeric features do not use it: they count
  into bins cut at this sketch's quantiles (histogram.py), which is exact and ~10x cheaper per value.
- `CategoricalState` (strings; None means missing): exact counts over a fixed vocabulary plus one
  "other" bucket. The vocabulary is chosen once, from the reference data (its `max_categories` most
  frequent values); windows count against that same vocabulary, so memory is bounded by the cap and
  merging is an exact sum. Categories the model never saw land in "other", which is where a new
  category shows up as drift.

`to_dict` gives plain values plus the sketch as raw bytes; `codec` turns such documents into JSON
(jsonb) or one compact blob (bytea).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import datasketches
import numpy as np

NUMERIC = "numeric"
CATEGORICAL = "categorical"
OTHER = "__other__"


class RowCounts:
    """What every per-feature state derives from its `rows` (missing included) and `missing`."""

    rows: int
    missing: int

    @property
    def count(self) -> int:
        """Rows with a value."""
        return self.rows - self.missing

    @property
    def missing_share(self) -> float:
        return self.missing / self.rows if self.rows else 0.0


class NumericState(RowCounts):
    kind = NUMERIC

    def __init__(self, k: int = 200) -> None:
        self.sketch = datasketches.kll_floats_sketch(k)
        self._memo: dict[tuple[str, bytes], np.ndarray] = {}  # quantiles and CDFs read since the last change
        self.rows = 0  # every row seen, missing included
        self.missing = 0
        self.mean = 0.0
        self.m2 = 0.0  # sum of squared deviations from the mean (Welford/Chan)

    @property
    def k(self) -> int:
        return self.sketch.k

    @property
    def std(self) -> float:
        return float(np.sqrt(self.m2 / self.count)) if self.count else 0.0

    @property
    def rank_error(self) -> float:
        """The sketch's documented normalised rank error (99% confidence); 0 while it is still exact."""
        if not self.sketch.is_estimation_mode():
            return 0.0
        return float(self.sketch.normalized_rank_error(False))

    def update(self, values: np.ndarray) -> None:
        """Add a float64 column already checked by `as_numeric` (NaN = missing, no infinities). Sorted
        before it goes into the sketch: KLL's error bound holds for any input order, and sorted input
        halves the update's cost (its compactions sort less)."""
        missing = np.isnan(values)
        present = values[~missing] if missing.any() else values
        if len(present):
            mean = float(present.mean())
            self._add_moments(len(present), mean, float(np.dot(present - mean, present - mean)))
            self.sketch.update(np.sort(present.astype(np.float32)))
            self._memo.clear()
        self.rows += len(values)
        self.missing += len(values) - len(present)

    def merge(self, other: "NumericState") -> None:
        self.sketch.merge(other.sketch)
        self._memo.clear()
        self._add_moments(other.count, other.mean, other.m2)
        self.rows += other.rows
        self.missing += other.missing

    def _add_moments(self, n: int, mean: float, m2: float) -> None:
        # Chan et al.: combine (count, mean, M2) of two disjoint parts; called before the counts grow.
        if n == 0:
            return
        have = self.count
        total = have + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * have * n / total

    def cdf(self, points: np.ndarray) -> np.ndarray:
        """Share of values <= each point (points sorted and unique); remembered until the state changes
        (a reference is read at the same edges by every window judged against it)."""
        if len(points) == 0:
            return np.empty(0)
        return self._remember("cdf", points, lambda: self.sketch.get_cdf(points.tolist(), True)[:-1])

    def quantiles(self, ranks: np.ndarray) -> np.ndarray:
        """The values at `ranks`; remembered until the state changes."""
        return self._remember("quantiles", ranks, lambda: self.sketch.get_quantiles(ranks.tolist(), True))

    def _remember(self, what: str, at: np.ndarray, read) -> np.ndarray:
        key = (what, np.asarray(at, dtype=np.float64).tobytes())
        found = self._memo.get(key)
        if found is None:
            found = np.asarray(read(), dtype=np.float64)
            found.flags.writeable = False
            self._memo[key] = found
        return found

    def to_dict(self) -> dict:
        return {"kind": NUMERIC, "rows": self.rows, "missing": self.missing, "mean": self.mean, "m2": self.m2,
                "sketch": self.sketch.serialize()}

    @classmethod
    def from_dict(cls, doc: dict) -> "NumericState":
        state = cls.__new__(cls)
        state.sketch = datasketches.kll_floats_sketch.deserialize(bytes(doc["sketch"]))
        state._memo = {}
        state.rows, state.missing = int(doc["rows"]), int(doc["missing"])
        state.mean, state.m2 = float(doc["mean"]), float(doc["m2"])
        return state


class CategoricalState(RowCounts):
    kind = CATEGORICAL

    def __init__(self, vocabulary: Sequence[str]) -> None:
        self.vocabulary = tuple(vocabulary)
        self._index = {v: i for i, v in enumerate(self.vocabulary)}
        self.counts = np.zeros(len(self.vocabulary), dtype=np.int64)
        self.other = 0
        self.rows = 0
        self.missing = 0

    @classmethod
    def from_values(cls, values: Sequence[str | None], max_categories: int) -> "CategoricalState":
        """A reference state: the `max_categories` most frequent values (ties by name), the rest in other."""
        seen = Counter(v for v in values if v is not None)
        top = sorted(seen.items(), key=lambda item: (-item[1], item[0]))[:max_categories]
        state = cls(sorted(name for name, _ in top))
        state.update(values)
        return state

    def fresh(self) -> "CategoricalState":
        """An empty state over the same vocabulary, e.g. a window for this reference feature."""
        return CategoricalState(self.vocabulary)

    def update(self, values: Sequence[str | None]) -> None:
        tally = Counter(values)
        missing = tally.pop(None, 0)
        for value, n in tally.items():
            slot = self._index.get(value)
            if slot is None:
                self.other += n
            else:
                self.counts[slot] += n
        self.rows += len(values)
        self.missing += missing

    def merge(self, other: "CategoricalState") -> None:
        if other.vocabulary != self.vocabulary:
            raise ValueError("cannot merge categorical states counted over different vocabularies")
        self.counts += other.counts
        self.other += other.other
        self.rows += other.rows
        self.missing += other.missing

    def frequencies(self) -> np.ndarray:
        """Shares of the vocabulary's categories, then "other", over the rows with a value."""
        tally = np.append(self.counts, self.other).astype(np.float64)
        return tally / tally.sum() if tally.sum() else tally

    def to_dict(self) -> dict:
        return {"kind": CATEGORICAL, "rows": self.rows, "missing": self.missing, "other": self.other,
                "vocabulary": list(self.vocabulary), "counts": self.counts.tolist()}

    @classmethod
    def from_dict(cls, doc: dict) -> "CategoricalState":
        state = cls(doc["vocabulary"])
        state.counts = np.asarray(doc["counts"], dtype=np.int64)
        state.other, state.rows, state.missing = int(doc["other"]), int(doc["rows"]), int(doc["missing"])
        return state


FeatureState = NumericState | CategoricalState


def state_from_dict(doc: dict) -> FeatureState:
    if doc.get("kind") == NUMERIC:
        return NumericState.from_dict(doc)
    if doc.get("kind") == CATEGORICAL:
        return CategoricalState.from_dict(doc)
    raise ValueError(f"unknown feature state kind {doc.get('kind')!r}")


def column_kind(values) -> str:
    """NUMERIC for numbers (a numeric numpy array or a sequence of numbers), CATEGORICAL for strings."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
        return NUMERIC
    if any(isinstance(v, str) for v in values):
        return CATEGORICAL
    return NUMERIC


def as_numeric(values, *, finite: bool = True) -> np.ndarray:
    """The column as float64 with NaN for missing; raises ValueError for text or (unless `finite` is
    False: the caller checks a whole batch at once) infinities."""
    try:
        column = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("expected numbers") from None
    if column.ndim != 1:
        raise ValueError("expected a flat column")
    if finite and np.isinf(column).any():
        raise ValueError("infinite values are not allowed")
    return column


def as_categorical(values) -> list[str | None]:
    column = list(values)
    bad = next((v for v in column if v is not None and not isinstance(v, str)), None)
    if bad is not None:
        raise ValueError(f"expected strings, got {type(bad).__name__}")
    return column
