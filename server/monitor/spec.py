"""A model's monitoring spec: how observations are cut into windows and when a window counts as drift.

Defaults are chosen for trading feature streams (thousands of rows a minute, tens of features); the
reasoning behind the detection thresholds is in `detectors`. `validate()` raises `InvalidArgument` with one
violation per bad field, the field named as `monitoring.<name>`, so the API can return it as it is.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from closedloop.server.errors import FieldViolation, InvalidArgument

NUMERIC_METHODS = ("auto", "ks", "psi", "wasserstein")
CATEGORICAL_METHODS = ("jensen_shannon",)
SEVERITIES = ("LOW", "MEDIUM", "HIGH", "CRITICAL")


@dataclass(frozen=True)
class MonitoringSpec:
    # Windows close at `window_rows` rows or after `window_seconds`, whichever comes first (either may be
    # None, not both). A window closed by time with fewer than `min_rows` rows is not judged.
    window_rows: int | None = 10_000
    window_seconds: float | None = 3600.0
    min_rows: int = 500
    # Outcome (performance) windows close at `outcome_window_rows` outcomes or after `window_seconds`;
    # one closed by time is judged from min(min_rows, outcome_window_rows) outcomes on.
    outcome_window_rows: int = 1000
    features: tuple[str, ...] = ()  # empty: every feature of the reference profile
    numeric_method: str = "auto"  # auto: ks up to large_sample_rows, wasserstein above (see detectors)
    categorical_method: str = "jensen_shannon"
    alpha: float = 0.05  # KS false-alarm level per feature and window
    large_sample_rows: int = 1000  # effective sample size above which `auto` stops trusting p-values
    wasserstein_threshold: float = 0.1  # W1 / reference std
    psi_threshold: float = 0.2
    psi_bins: int = 10
    js_threshold: float = 0.1  # Jensen-Shannon distance, base 2, in [0, 1]
    drift_share: float = 0.2  # share of watched features drifted that raises a drift alert
    # Bins per numeric feature of a window, cut at the reference's quantiles (histogram.py): 1.7 KB per
    # feature at 200; the KS resolution is ~1/sketch_k. (Named when windows held KLL sketches of this k.)
    sketch_k: int = 200
    # Relative drop of the model's metric vs its holdout value -> alert severity (the largest reached).
    performance_severity: tuple[tuple[str, float], ...] = (
        ("LOW", 0.05), ("MEDIUM", 0.10), ("HIGH", 0.20), ("CRITICAL", 0.35))

    def validate(self) -> "MonitoringSpec":
        bad: list[FieldViolation] = []

        def check(name: str, ok: bool, description: str) -> None:
            if not ok:
                bad.append(FieldViolation(f"monitoring.{name}", description))

        if self.window_rows is None and self.window_seconds is None:
            bad.append(FieldViolation("monitoring.window_rows", "set window_rows, window_seconds or both"))
        check("window_rows", self.window_rows is None or _int_in(self.window_rows, 1, 10_000_000),
              "must be an integer between 1 and 10,000,000")
        check("window_seconds", self.window_seconds is None or _number_in(self.window_seconds, 1.0, 31 * 86400.0),
              "must be between 1 second and 31 days")
        check("min_rows", _int_in(self.min_rows, 1, 10_000_000), "must be an integer between 1 and 10,000,000")
        check("outcome_window_rows", _int_in(self.outcome_window_rows, 1, 10_000_000),
              "must be an integer between 1 and 10,000,000")
        if not bad and self.window_rows is not None and self.min_rows > self.window_rows:
            check("min_rows", False, f"must not exceed window_rows ({self.window_rows})")
        check("features", isinstance(self.features, tuple) and all(isinstance(f, str) and f for f in self.features)
              and len(set(self.features)) == len(self.features), "must be distinct non-empty names")
        check("numeric_method", self.numeric_method in NUMERIC_METHODS, f"one of {', '.join(NUMERIC_METHODS)}")
        check("categorical_method", self.categorical_method in CATEGORICAL_METHODS,
              f"one of {', '.join(CATEGORICAL_METHODS)}")
        check("alpha", _number_in(self.alpha, 1e-9, 0.5, open_low=True), "must be in (0, 0.5]")
        check("large_sample_rows", _int_in(self.large_sample_rows, 1, 10_000_000), "must be a positive integer")
        for name in ("wasserstein_threshold", "psi_threshold", "js_threshold"):
            check(name, _number_in(getattr(self, name), 0.0, 100.0, open_low=True), "must be a positive number")
        check("js_threshold", self.js_threshold <= 1.0 if _is_number(self.js_threshold) else True,
              "must not exceed 1 (the largest Jensen-Shannon distance)")
        check("psi_bins", _int_in(self.psi_bins, 2, 100), "must be an integer between 2 and 100")
        check("drift_share", _number_in(self.drift_share, 0.0, 1.0, open_low=True), "must be in (0, 1]")
        check("sketch_k", _int_in(self.sketch_k, 8, 65535), "must be an integer between 8 and 65535")
        check("performance_severity", _severity_ladder_ok(self.performance_severity),
              "must be (severity, relative drop) pairs with distinct severities from "
              f"{', '.join(SEVERITIES)} and drops in (0, 10] rising with severity")
        if bad:
            raise InvalidArgument(bad)
        return self

    @property
    def window_bins(self) -> int:
        """The bins of a window's numeric features: `sketch_k`, except that windows of at most 2 x
        large_sample_rows rows (the only ones `auto` may judge by a KS p-value) get one bin per row, so
        the p-value is not blurred by the edges' resolution (8 bytes a bin)."""
        if self.window_rows is not None and self.window_rows <= 2 * self.large_sample_rows:
            return max(self.sketch_k, self.window_rows)
        return self.sketch_k

    def to_dict(self) -> dict:
        """A JSON-able form (stored per model)."""
        doc = dataclasses.asdict(self)
        doc["features"] = list(self.features)
        doc["performance_severity"] = [list(pair) for pair in self.performance_severity]
        return doc

    @classmethod
    def from_dict(cls, doc: dict | None) -> "MonitoringSpec":
        """The spec stored by `to_dict` (None: the defaults); keys it does not know are ignored."""
        if not doc:
            return cls()
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in doc.items() if k in known}
        if "features" in values:
            values["features"] = tuple(values["features"])
        if "performance_severity" in values:
            values["performance_severity"] = tuple((str(n), float(d)) for n, d in values["performance_severity"])
        return cls(**values)

    @property
    def outcome_min_rows(self) -> int:
        return min(self.min_rows, self.outcome_window_rows)

    def severity_for(self, drop: float) -> str | None:
        """The most severe level whose drop is reached, or None below the lowest (no alert)."""
        reached = [name for name, threshold in self.performance_severity if drop >= threshold]
        return reached[-1] if reached else None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number_in(value, low: float, high: float, open_low: bool = False) -> bool:
    return _is_number(value) and (value > low if open_low else value >= low) and value <= high


def _int_in(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _severity_ladder_ok(ladder) -> bool:
    try:
        names = [name for name, _ in ladder]
        drops = [drop for _, drop in ladder]
    except (TypeError, ValueError):
        return False
    return (bool(ladder) and all(n in SEVERITIES for n in names) and len(set(names)) == len(names)
            and sorted(names, key=SEVERITIES.index) == names
            and all(_number_in(d, 0.0, 10.0, open_low=True) for d in drops)
            and all(a < b for a, b in zip(drops, drops[1:])))
