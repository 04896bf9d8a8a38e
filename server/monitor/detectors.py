"""Drift detectors: a closed window's feature states against the version's reference profile.

All statistics are computed from the states alone (sketches, moments, category counts), never raw rows:

- **KS** (numeric): D = max |F_ref(x) - F_win(x)| with both CDFs read from the KLL sketches at the union of
  their quantiles on a fine rank grid. D is within `rank_error(ref) + rank_error(win)` of the exact
  two-sample statistic on the raw data (KLL's documented 99% bound; ~0.3% for a reference at k=1000, ~1.3%
  for a window at k=200, 0 while a sketch is still exact). p-value: the asymptotic Kolmogorov
  distribution at sqrt(n_eff)·D with n_eff = n·m/(n+m) over the rows that have a value.
- **PSI** (numeric): on `psi_bins` bins cut at the reference's quantiles; shares below 1e-4 are floored so
  an empty bin costs a bounded amount. Conventional reading: < 0.1 stable, 0.1-0.2 moderate, > 0.2 shift.
- **Normalised Wasserstein** (numeric): W1 = ∫|Q_ref(u) - Q_win(u)|du from the two quantile functions on a
  1,000-point rank grid, divided by the reference std (by 1 when that std is 0). It reads as "the
  distribution moved by this many training standard deviations".
- **Jensen-Shannon distance** (categorical): base 2, in [0, 1], over the reference vocabulary plus "other".

Which test applies when, and why. A p-value answers "could this difference be chance?", and with
10,000-row windows against a large reference the answer is "no" for shifts far too small to matter (and
for the sketches' own ~1% rank error). Following Evidently's practice, `numeric_method="auto"` (the
default) uses KS with its p-value (drifted when p < `alpha`, default 0.05, which is then the false-alarm
rate per feature and window) while the effective sample size n_eff is at most `large_sample_rows`
(default 1,000), and switches to the effect size above it: normalised Wasserstein >= 0.1 (a tenth of a
training std; a noise-free window sits near 0.01-0.02 at 10,000 rows, a 0.3-sigma shift at 0.3). A large
window therefore has a false-alarm rate far below `alpha`. Categories always use the JS distance against
`js_threshold` (default 0.1), an effect size, since categorical monitoring windows are large too.
`ks`, `psi` and `wasserstein` can be chosen explicitly; they then apply at every size.

`drift_score`, what the seed rule `metrics.drift_score > 0.25` reads: the largest normalised effect among
the features flagged as drifted, capped at 1 (0 when none is flagged). The effect is W1 / reference std
for a numeric feature (whatever test flagged it) and the JS distance for a categorical one. So
`drift_score > 0.25` means "at least one input moved, significantly, by more than a quarter of its
training standard deviation" (or a categorical mix changed by a JS distance above 0.25): the 0.3-sigma
shift of a trading feature passes, chance fluctuations of a 10,000-row window (~0.02) do not. How many
features moved is a separate number, `drifted_share`, and that is what the spec's `drift_share`
(default 0.2) compares to decide whether a window raises a drift alert at all: the share gates the alert,
the score tells the rules how big the move is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import kolmogorov

from closedloop.server.monitor.profile import ReferenceProfile
from closedloop.server.monitor.spec import MonitoringSpec
from closedloop.server.monitor.states import CategoricalState, FeatureState, NumericState
from closedloop.server.monitor.window import WindowAccumulator

_GRID = 1000  # ranks at which quantile functions are read; 0.1% resolution, well below sketch error
_PSI_FLOOR = 1e-4


@dataclass(frozen=True)
class FeatureVerdict:
    feature: str
    method: str  # ks | psi | wasserstein | jensen_shannon | missing
    statistic: float
    p_value: float | None  # only for tests that have one (ks)
    threshold: float  # alpha for ks, the effect threshold otherwise
    drifted: bool
    reference_rows: int  # rows with a value
    window_rows: int
    effect: float  # normalised size of the change (W1/std or JS distance), whatever the method


@dataclass(frozen=True)
class WindowVerdict:
    features: tuple[FeatureVerdict, ...]
    prediction: FeatureVerdict | None  # prediction drift, reported, not counted in the shares
    rows: int
    drifted_share: float
    drift_score: float
    alert: bool  # drifted_share reached the spec's drift_share

    @property
    def drifted_features(self) -> tuple[str, ...]:
        return tuple(v.feature for v in self.features if v.drifted)

    def worst(self, n: int = 3) -> tuple[FeatureVerdict, ...]:
        """The `n` features that moved most, by normalised effect."""
        return tuple(sorted(self.features, key=lambda v: (-v.effect, v.feature))[:n])

    def alert_metrics(self) -> dict[str, float]:
        """The metrics a drift alert carries."""
        metrics = {"drift_score": self.drift_score, "drifted_share": self.drifted_share,
                   "drifted_features": float(len(self.drifted_features)), "window_rows": float(self.rows)}
        for method in {v.method for v in self.features}:
            metrics[f"max_{method}"] = max(v.statistic for v in self.features if v.method == method)
        return metrics

    def alert_labels(self) -> dict[str, str]:
        return {"drifted_features": ",".join(self.drifted_features)}


def judge_window(profile: ReferenceProfile, window: WindowAccumulator, spec: MonitoringSpec) -> WindowVerdict:
    verdicts = tuple(judge_feature(name, profile.features[name], state, spec)
                     for name, state in window.features.items())
    prediction = None
    if profile.prediction is not None and window.prediction is not None and window.prediction.count:
        prediction = judge_feature("prediction", profile.prediction, window.prediction, spec)
    drifted = [v for v in verdicts if v.drifted]
    share = len(drifted) / len(verdicts) if verdicts else 0.0
    score = min(1.0, max((v.effect for v in drifted), default=0.0))
    return WindowVerdict(verdicts, prediction, window.rows, share, score, bool(drifted) and share >= spec.drift_share)


def judge_feature(name: str, ref: FeatureState, win: FeatureState, spec: MonitoringSpec) -> FeatureVerdict:
    if ref.count == 0 or win.count == 0:
        # Nothing to compare: a feature that had values in training and has none now has drifted.
        return FeatureVerdict(name, "missing", win.missing_share, None, 1.0, ref.count > 0 and win.count == 0,
                              ref.count, win.count, 1.0 if ref.count > 0 and win.count == 0 else 0.0)
    if isinstance(ref, CategoricalState):
        distance = js_distance(ref, win)
        return FeatureVerdict(name, "jensen_shannon", distance, None, spec.js_threshold,
                              distance >= spec.js_threshold, ref.count, win.count, distance)
    effect = wasserstein_normalised(ref, win)
    method = spec.numeric_method
    if method == "auto":
        method = "ks" if effective_size(ref, win) <= spec.large_sample_rows else "wasserstein"
    if method == "ks":
        d, p = ks_test(ref, win)
        return FeatureVerdict(name, "ks", d, p, spec.alpha, p < spec.alpha, ref.count, win.count, effect)
    if method == "psi":
        value = psi(ref, win, spec.psi_bins)
        return FeatureVerdict(name, "psi", value, None, spec.psi_threshold, value >= spec.psi_threshold,
                              ref.count, win.count, effect)
    return FeatureVerdict(name, "wasserstein", effect, None, spec.wasserstein_threshold,
                          effect >= spec.wasserstein_threshold, ref.count, win.count, effect)


def effective_size(a: FeatureState, b: FeatureState) -> float:
    return a.count * b.count / (a.count + b.count)


def ks_statistic(a: NumericState, b: NumericState) -> float:
    ranks = np.linspace(0.0, 1.0, _GRID + 1)
    points = np.unique(np.concatenate([a.quantiles(ranks), b.quantiles(ranks)]))
    return float(np.abs(a.cdf(points) - b.cdf(points)).max())


def ks_test(a: NumericState, b: NumericState) -> tuple[float, float]:
    """(D, asymptotic p-value)."""
    d = ks_statistic(a, b)
    return d, float(kolmogorov(np.sqrt(effective_size(a, b)) * d))


def psi(ref: NumericState, win: NumericState, bins: int = 10) -> float:
    edges = np.unique(ref.quantiles(np.arange(1, bins) / bins))
    expected = np.diff(np.concatenate([[0.0], ref.cdf(edges), [1.0]]))
    actual = np.diff(np.concatenate([[0.0], win.cdf(edges), [1.0]]))
    return psi_from_shares(expected, actual)


def psi_from_shares(expected: np.ndarray, actual: np.ndarray) -> float:
    expected = np.maximum(expected, _PSI_FLOOR)
    actual = np.maximum(actual, _PSI_FLOOR)
    return float(((actual - expected) * np.log(actual / expected)).sum())


def wasserstein_normalised(ref: NumericState, win: NumericState) -> float:
    ranks = (np.arange(_GRID) + 0.5) / _GRID
    w1 = float(np.abs(ref.quantiles(ranks) - win.quantiles(ranks)).mean())
    return w1 / ref.std if ref.std > 0 else w1


def js_distance(ref: CategoricalState, win: CategoricalState) -> float:
    p, q = ref.frequencies(), win.frequencies()
    m = (p + q) / 2
    divergence = 0.5 * _kl(p, m) + 0.5 * _kl(q, m)
    return float(np.sqrt(max(divergence, 0.0)))


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    present = p > 0
    return float((p[present] * np.log2(p[present] / q[present])).sum())
