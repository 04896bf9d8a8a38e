"""An outcome window of one model version: (realised outcome, prediction made) pairs, mergeable.

Realised performance needs the pairs themselves (roc_auc ranks them, f1 counts per class), so an
outcome window keeps them as two float64 columns: 16 bytes per outcome, bounded by the spec's
`outcome_window_rows` (1,000 by default: 16 KB) plus what arrives between two flushes. Outcomes arrive
far more slowly than observations (a trade's result is known minutes to days later), which is why the
window is counted in outcomes and is small. Partials merge by concatenation, so the closing server
scores exactly the pairs every server saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from closedloop.server.errors import FieldViolation, InvalidArgument
from closedloop.server.monitor import codec
from closedloop.server.monitor.performance import PerformanceVerdict, judge_performance
from closedloop.server.monitor.spec import MonitoringSpec


@dataclass
class OutcomeBatch:
    rows: int
    outcomes: np.ndarray
    predictions: np.ndarray


class OutcomeWindow:
    def __init__(self, model_id: str, version: int) -> None:
        self.model_id = model_id
        self.version = version
        self.outcomes = np.empty(0)
        self.predictions = np.empty(0)

    @property
    def rows(self) -> int:
        return len(self.outcomes)

    def fresh(self) -> "OutcomeWindow":
        return OutcomeWindow(self.model_id, self.version)

    def update(self, outcomes, predictions) -> int:
        """Count one batch; the whole batch is checked first (a bad one leaves the window untouched)."""
        batch = self.check(outcomes, predictions)
        return self.count(batch)

    def check(self, outcomes, predictions) -> OutcomeBatch:
        y = _finite("outcomes", outcomes)
        p = _finite("predictions", predictions)
        if len(y) != len(p):
            raise InvalidArgument(FieldViolation("predictions", f"has {len(p)} rows, outcomes has {len(y)}"))
        return OutcomeBatch(len(y), y, p)

    def count(self, batch: OutcomeBatch, start: int = 0, stop: int | None = None) -> int:
        """Count rows [start, stop) of a checked batch; returns how many."""
        stop = batch.rows if stop is None else min(stop, batch.rows)
        self.outcomes = np.concatenate([self.outcomes, batch.outcomes[start:stop]])
        self.predictions = np.concatenate([self.predictions, batch.predictions[start:stop]])
        return max(stop - start, 0)

    def merge(self, other: "OutcomeWindow") -> None:
        if (other.model_id, other.version) != (self.model_id, self.version):
            raise ValueError(f"cannot merge outcomes of {other.model_id} v{other.version} into "
                             f"{self.model_id} v{self.version}")
        self.outcomes = np.concatenate([self.outcomes, other.outcomes])
        self.predictions = np.concatenate([self.predictions, other.predictions])

    def judge(self, metric: str, holdout: float, spec: MonitoringSpec) -> PerformanceVerdict:
        return judge_performance(metric, holdout, self.outcomes, self.predictions, spec)

    def to_bytes(self) -> bytes:
        return codec.to_bytes({"model_id": self.model_id, "version": self.version,
                               "outcomes": self.outcomes.astype("<f8").tobytes(),
                               "predictions": self.predictions.astype("<f8").tobytes()})

    def merge_bytes(self, data: bytes) -> None:
        self.merge(self.from_bytes(data))

    @classmethod
    def from_bytes(cls, data: bytes) -> "OutcomeWindow":
        doc = codec.from_bytes(data)
        window = cls(doc["model_id"], int(doc["version"]))
        window.outcomes = np.frombuffer(doc["outcomes"], dtype="<f8").astype(np.float64)
        window.predictions = np.frombuffer(doc["predictions"], dtype="<f8").astype(np.float64)
        return window


def _finite(field: str, values) -> np.ndarray:
    column = np.asarray(values, dtype=np.float64)
    if column.ndim != 1:
        raise InvalidArgument(FieldViolation(field, "expected a flat column"))
    if not np.isfinite(column).all():
        raise InvalidArgument(FieldViolation(field, "NaN and infinities are not allowed"))
    return column
