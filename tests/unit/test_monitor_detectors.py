"""Drift detectors on a window's bins against the reference sketch: false-alarm level, power on small
shifts, agreement with exact statistics on the raw rows.

The data are seeded; the reference KLL sketch's compaction coin flips are not (the C++ library seeds its
own generator), so every comparison with exact values allows the reference's documented rank error plus
the window's documented edge resolution (detectors.ks_resolution, wasserstein_resolution)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ks_2samp

from closedloop.server.monitor.detectors import (
    judge_window, ks_resolution, ks_statistic, ks_test, psi, psi_from_shares, wasserstein_normalised,
    wasserstein_resolution,
)
from closedloop.server.monitor.profile import ReferenceProfile
from closedloop.server.monitor.spec import MonitoringSpec
from closedloop.server.monitor.window import WindowAccumulator


def window_for(profile, spec, columns, version=1):
    window = WindowAccumulator.for_profile("m", version, profile, spec.features, spec.window_bins, spec.psi_bins)
    window.update(columns)
    return window


def reference_and_window(reference, window, bins=200):
    """(the reference's sketch state, the window's binned feature) for one numeric column."""
    profile = ReferenceProfile.build({"x": reference})
    accumulator = WindowAccumulator.for_profile("m", 1, profile, bins=bins)
    accumulator.update({"x": window})
    return profile.features["x"], accumulator.features["x"]


def test_identical_distributions_flag_at_the_configured_false_alarm_level():
    """Small windows (500 rows, KS p-value, alpha 0.05): over 240 windows x 5 features the share of
    flagged features stays near 0.05, and window alerts (>= 2 of 5 drifted) stay below it."""
    rng = np.random.default_rng(11)
    profile = ReferenceProfile.build({f"f{i}": rng.standard_normal(20000) for i in range(5)})
    spec = MonitoringSpec(window_rows=500, min_rows=500, drift_share=0.4).validate()
    flagged = alerts = 0
    windows = 240
    for _ in range(windows):
        verdict = judge_window(profile, window_for(profile, spec, {f"f{i}": rng.standard_normal(500) for i in range(5)}), spec)
        assert {v.method for v in verdict.features} == {"ks"}
        flagged += len(verdict.drifted_features)
        alerts += verdict.alert
    rate = flagged / (windows * 5)
    # binomial sd at 1,200 trials is 0.0063: accept 0.05 +- ~3 sd
    assert 0.03 <= rate <= 0.07, rate
    assert alerts / windows <= 0.05


def test_large_windows_switch_to_effect_size_and_stay_quiet():
    rng = np.random.default_rng(12)
    profile = ReferenceProfile.build({f"f{i}": rng.standard_normal(20000) for i in range(5)})
    spec = MonitoringSpec().validate()  # 10,000-row windows: n_eff > 1,000, normalised Wasserstein
    flagged = 0
    for _ in range(200):
        verdict = judge_window(profile, window_for(profile, spec, {f"f{i}": rng.standard_normal(10000) for i in range(5)}), spec)
        assert {v.method for v in verdict.features} == {"wasserstein"}
        flagged += len(verdict.drifted_features)
        assert verdict.drift_score == 0.0 or verdict.drifted_features
    assert flagged == 0  # far below alpha: noise sits near 0.02 normalised, the threshold is 0.1


def test_small_mean_shift_on_five_of_twenty_features_flags_exactly_those():
    rng = np.random.default_rng(13)
    names = [f"f{i:02d}" for i in range(20)]
    shifted = {"f01", "f05", "f08", "f13", "f19"}
    profile = ReferenceProfile.build({n: rng.standard_normal(20000) for n in names})
    spec = MonitoringSpec().validate()
    for _ in range(3):
        window = window_for(profile, spec, {n: rng.standard_normal(10000) + (0.3 if n in shifted else 0.0) for n in names})
        verdict = judge_window(profile, window, spec)
        assert set(verdict.drifted_features) == shifted
        assert verdict.drifted_share == 0.25 and verdict.alert  # default drift_share 0.2
        # drift_score: the largest flagged effect, ~0.3 std, so the seed rule `drift_score > 0.25` fires
        assert 0.25 < verdict.drift_score < 0.4
        assert {v.feature for v in verdict.worst(5)} == shifted
        assert verdict.alert_labels()["drifted_features"] == ",".join(sorted(shifted))
        assert verdict.alert_metrics()["drifted_features"] == 5.0


def test_small_windows_find_the_shift_with_ks_too():
    rng = np.random.default_rng(14)
    profile = ReferenceProfile.build({"a": rng.standard_normal(20000), "b": rng.standard_normal(20000)})
    spec = MonitoringSpec(window_rows=1000, min_rows=100).validate()
    verdict = judge_window(profile, window_for(profile, spec, {"a": rng.standard_normal(1000) + 0.3,
                                                             "b": rng.standard_normal(1000)}), spec)
    a, b = verdict.features
    assert a.method == "ks" and a.drifted and a.p_value < 1e-6 and a.threshold == 0.05
    assert not b.drifted and b.p_value > 0.05
    assert (a.reference_rows, a.window_rows) == (20000, 1000)


def test_categorical_frequency_change_is_flagged_by_jensen_shannon():
    rng = np.random.default_rng(15)
    venues = ["XNYS", "XNAS", "BATS", "ARCA"]
    profile = ReferenceProfile.build({"venue": list(rng.choice(venues, 20000, p=[0.4, 0.3, 0.2, 0.1])),
                                      "x": rng.standard_normal(20000)})
    spec = MonitoringSpec().validate()
    same = judge_window(profile, window_for(profile, spec, {"venue": list(rng.choice(venues, 10000, p=[0.4, 0.3, 0.2, 0.1])),
                                                           "x": rng.standard_normal(10000)}), spec)
    moved = judge_window(profile, window_for(profile, spec, {"venue": list(rng.choice(venues, 10000, p=[0.15, 0.3, 0.2, 0.35])),
                                                            "x": rng.standard_normal(10000)}), spec)
    assert same.features[0].method == "jensen_shannon" and not same.features[0].drifted
    venue = moved.features[0]
    assert venue.method == "jensen_shannon" and venue.drifted and venue.p_value is None
    assert venue.statistic > spec.js_threshold > same.features[0].statistic
    assert moved.drifted_features == ("venue",)


def test_new_category_lands_in_other_and_counts_as_drift():
    profile = ReferenceProfile.build({"side": ["buy", "sell"] * 5000})
    spec = MonitoringSpec().validate()
    verdict = judge_window(profile, window_for(profile, spec, {"side": ["buy", "sell", "short", "short"] * 2500}), spec)
    assert verdict.features[0].drifted


@pytest.mark.parametrize("seed,shift", [(21, 0.0), (22, 0.05), (23, 0.2), (24, 0.5)])
def test_ks_from_bins_agrees_with_scipy_within_the_documented_error(seed, shift):
    """D at the edges: never above the exact D by more than the reference's rank error, and below it by
    at most that plus the largest single-bin mass (ks_resolution)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(50000).astype(np.float32).astype(np.float64)
    b = (rng.standard_normal(10000) * 1.1 + shift).astype(np.float32).astype(np.float64)
    ref, win = reference_and_window(a, b)
    exact = ks_2samp(a, b)
    d, p = ks_test(ref, win)
    resolution = ks_resolution(ref, win)
    # ~0.5% per bin at 200 bins; more where a shifted window piles into the reference's last bins
    assert 0 < resolution < 0.05
    assert exact.statistic - ref.rank_error - resolution <= d <= exact.statistic + ref.rank_error
    assert d == ks_statistic(ref, win)
    # an exact reference (n <= k) and one bin per reference value: D within the resolution, the
    # asymptotic p-value close to scipy's
    small_a, small_b = a[:800], b[:600]
    ref, win = reference_and_window(small_a, small_b, bins=800)
    d_small, p_small = ks_test(ref, win)
    exact_small = ks_2samp(small_a, small_b, method="asymp")
    assert ref.rank_error == 0.0
    assert exact_small.statistic - ks_resolution(ref, win) <= d_small <= exact_small.statistic + 1e-12
    assert p_small == pytest.approx(exact_small.pvalue, rel=0.5, abs=1e-3)


def exact_psi(reference, window, bins=10):
    edges = np.unique(np.quantile(reference, np.arange(1, bins) / bins, method="inverted_cdf"))
    shares = lambda x: np.diff(np.concatenate([[0.0], np.searchsorted(np.sort(x), edges, side="right") / len(x), [1.0]]))
    return psi_from_shares(shares(reference), shares(window))


@pytest.mark.parametrize("seed,shift", [(31, 0.0), (32, 0.1), (33, 0.3), (34, 1.0)])
def test_psi_from_bins_agrees_with_exact_psi(seed, shift):
    """The window's shares are exact (the PSI cut points are edges of its bins); the reference's carry
    its sketch's ~0.3% rank error, so the tolerance is 0.005 absolute + 5% relative."""
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal(50000).astype(np.float32), (rng.standard_normal(10000) + shift).astype(np.float32)
    ref, win = reference_and_window(a.astype(np.float64), b.astype(np.float64))
    assert psi(ref, win) == pytest.approx(exact_psi(a, b), abs=0.005, rel=0.05)


@pytest.mark.parametrize("scale,shift", [(2.0, 0.6), (1.0, 0.0), (3.0, 5.0)])
def test_wasserstein_from_bins_agrees_with_scipy(scale, shift):
    """Within the reference's rank error (a rank error e moves a normal quantile by at most e / pdf(0) =
    2.5 e standard deviations) plus the bins' documented interpolation bound; the last case puts most of
    the window beyond the reference's max, where the exact tail sums carry it."""
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(41)
    a, b = rng.standard_normal(50000) * 2, rng.standard_normal(10000) * scale + shift
    exact = wasserstein_distance(a, b) / a.std()
    ref, win = reference_and_window(a, b)
    tolerance = 2.5 * ref.rank_error + wasserstein_resolution(ref, win) / ref.std
    assert wasserstein_normalised(ref, win) == pytest.approx(exact, abs=tolerance)


def test_a_feature_that_stops_arriving_is_flagged_as_missing():
    rng = np.random.default_rng(42)
    profile = ReferenceProfile.build({"x": rng.standard_normal(5000), "y": rng.standard_normal(5000)})
    spec = MonitoringSpec().validate()
    verdict = judge_window(profile, window_for(profile, spec, {"x": rng.standard_normal(10000)}), spec)
    y = verdict.features[1]
    assert (y.method, y.drifted, y.statistic, y.window_rows) == ("missing", True, 1.0, 0)


def test_prediction_drift_is_reported_but_not_counted_in_the_share():
    rng = np.random.default_rng(43)
    profile = ReferenceProfile.build({"x": rng.standard_normal(20000)}, predictions=rng.random(20000))
    spec = MonitoringSpec().validate()
    window = WindowAccumulator.for_profile("m", 1, profile, bins=spec.window_bins)
    window.update({"x": rng.standard_normal(10000)}, rng.random(10000) * 0.5)
    verdict = judge_window(profile, window, spec)
    assert verdict.prediction is not None and verdict.prediction.drifted
    assert verdict.drifted_share == 0.0 and not verdict.alert and verdict.drift_score == 0.0


def test_explicit_methods_apply_at_every_size():
    rng = np.random.default_rng(44)
    profile = ReferenceProfile.build({"x": rng.standard_normal(20000)})
    for method, expected in (("ks", "ks"), ("psi", "psi"), ("wasserstein", "wasserstein")):
        spec = MonitoringSpec(numeric_method=method).validate()
        verdict = judge_window(profile, window_for(profile, spec, {"x": rng.standard_normal(10000) + 1.0}), spec)
        assert verdict.features[0].method == expected and verdict.features[0].drifted
