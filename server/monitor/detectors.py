"""Drift detectors: a closed window's feature states against the version's reference profile.

All statistics are computed from the states alone, never raw rows: the reference's KLL sketch and
moments, the window's exact bin counts at the reference's own quantiles (histogram.py), category counts.

- **KS** (numeric): D = max |F_ref(e) - F_win(e)| over the bin edges e. F_win is exact there; F_ref carries
  the reference KLL's documented rank error (99% bound; ~0.3% at the default k=1000, 0 while the
  reference kept every value). Between two edges both CDFs rise by at most their mass in that bin, so
  evaluating only at the edges underestimates the sup by at most the largest single-bin mass of either
  side (`ks_resolution`, computed per window: ~0.5-1% at 200 bins). So |D - D_exact| <= rank_error(ref)
  + ks_resolution, checked against scipy's ks_2samp on the raw rows. p-value: the asymptotic Kolmogorov
  distribution at sqrt(n_eff)·D with n_eff = n·m/(n+m) over the rows that have a value.
- **PSI** (numeric): on `psi_bins` bins cut at the reference's quantiles (those cut points are edges of
  the window's bins, so the window's shares are exact; the reference's are the sketch's). Shares below
  1e-4 are floored so an empty bin costs a bounded amount. Reading: < 0.1 stable, 0.1-0.2 moderate,
  > 0.2 shift.
- **Normalised Wasserstein** (numeric): W1 = ∫|F_ref(x) - F_win(x)|dx, divided by the reference std (by 1
  when that std is 0): "the distribution moved by this many training standard deviations". Below the
  reference's min and above its max the integral is exact (the window keeps its exact tail sums; F_ref
  is 0 or 1 there); inside each bin both CDFs are taken as linear between the edges, which misses at
  most (bin width) x (the larger of the two masses in that bin) per bin (`wasserstein_resolution`).
- **Jensen-Shannon distance** (categorical): base 2, in [0, 1], over the reference vocabulary plus "other".

Which test applies when, and why. A p-value answers "could this difference be chance?", and with
10,000-row windows against a large reference the answer is "no" for shifts far too small to matter (and
for the sketches' own ~1% rank error). Following Evidently's practice, `numeric_method="auto"` (the
default) uses KS with its p-value (drifted when p < `alpha`, default 0.05, which is then the false-alarm
rate per feature and window) while the effective sample size n_eff is at most `large_sample_rows`
(default 1,000), and switches to the effect size above it: normalised Wasserstein >= 0.1 (a tenth of a
training std; a noise-free window sits near 0.01-0.02 at 10,000 rows, a 0.3-sigma shift at 0.3). A large
window therefore has a false-alarm rate far below `alpha`. Windows that may be judged by a p-value get
one bin per row (up to 2,000: `MonitoringSpec.window_bins`), so the edge resolution is ~the reference's
own and does not lower the false-alarm level noticeably. Categories always use the JS distance against
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

from closedloop.server.monitor.histogram import BinnedFeature, as_edges
from closedloop.server.monitor.profile import ReferenceProfile
from closedloop.server.monitor.spec import MonitoringSpec
from closedloop.server.monitor.states import CategoricalState, FeatureState, NumericState
from closedloop.server.monitor.window import WindowAccumulator

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


def judge_feature(name: str, ref: FeatureState, win: BinnedFeature | CategoricalState,
                  spec: MonitoringSpec) -> FeatureVerdict:
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


def effective_size(a, b) -> float:
    return a.count * b.count / (a.count + b.count)


def _cdfs(ref: NumericState, win: BinnedFeature) -> tuple[np.ndarray, np.ndarray]:
    """(F_ref, F_win) at the window's edges."""
    return ref.cdf(win.edges), win.cdf_at_edges()


def ks_statistic(ref: NumericState, win: BinnedFeature) -> float:
    f_ref, f_win = _cdfs(ref, win)
    return float(np.abs(f_ref - f_win).max())


def ks_resolution(ref: NumericState, win: BinnedFeature) -> float:
    """How much evaluating D only at the edges can miss: the largest mass either side puts in one bin."""
    f_ref, f_win = _cdfs(ref, win)
    masses = np.concatenate([np.diff(np.concatenate([[0.0], f_ref, [1.0]])),
                             np.diff(np.concatenate([[0.0], f_win, [1.0]]))])
    return float(masses.max())


def ks_test(ref: NumericState, win: BinnedFeature) -> tuple[float, float]:
    """(D, asymptotic p-value)."""
    d = ks_statistic(ref, win)
    return d, float(kolmogorov(np.sqrt(effective_size(ref, win)) * d))


def psi(ref: NumericState, win: BinnedFeature, bins: int = 10) -> float:
    """PSI on `bins` bins cut at the reference's quantiles (edges of the window's bins when the window
    was laid out with these PSI bins)."""
    edges = as_edges(ref.quantiles(np.arange(1, bins) / bins))
    expected = np.diff(np.concatenate([[0.0], ref.cdf(edges), [1.0]]))
    actual = np.diff(np.concatenate([[0.0], win.cdf(edges), [1.0]]))
    return psi_from_shares(expected, actual)


def psi_from_shares(expected: np.ndarray, actual: np.ndarray) -> float:
    expected = np.maximum(expected, _PSI_FLOOR)
    actual = np.maximum(actual, _PSI_FLOOR)
    return float(((actual - expected) * np.log(actual / expected)).sum())


def wasserstein(ref: NumericState, win: BinnedFeature) -> float:
    """W1 = ∫|F_ref - F_win|: exact beyond the reference's min and max, linear inside each bin."""
    f_ref, f_win = _cdfs(ref, win)
    diff = f_ref - f_win
    a, b, width = diff[:-1], diff[1:], np.diff(win.edges)
    same_sign = a * b >= 0
    # |linear| over a bin: the trapezoid when it keeps its sign, two triangles when it crosses zero.
    denominator = np.where(same_sign, 1.0, np.abs(a) + np.abs(b))
    inner = np.where(same_sign, (np.abs(a) + np.abs(b)) / 2, (a * a + b * b) / (2 * denominator)) * width
    count = max(win.count, 1)
    return float(inner.sum() + win.low / count + win.high / count)


def wasserstein_resolution(ref: NumericState, win: BinnedFeature) -> float:
    """An upper bound on what the linear reading inside the bins can miss (unnormalised)."""
    f_ref, f_win = _cdfs(ref, win)
    masses = np.maximum(np.diff(f_ref), np.diff(f_win))
    return float((masses * np.diff(win.edges)).sum())


def wasserstein_normalised(ref: NumericState, win: BinnedFeature) -> float:
    w1 = wasserstein(ref, win)
    return w1 / ref.std if ref.std > 0 else w1


def js_distance(ref: CategoricalState, win: CategoricalState) -> float:
    p, q = ref.frequencies(), win.frequencies()
    m = (p + q) / 2
    divergence = 0.5 * _kl(p, m) + 0.5 * _kl(q, m)
    return float(np.sqrt(max(divergence, 0.0)))


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    present = p > 0
    return float((p[present] * np.log2(p[present] / q[present])).sum())
