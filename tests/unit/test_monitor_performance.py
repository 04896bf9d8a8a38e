"""Performance windows (numpy metrics that match the trainer's sklearn ones) and the monitoring spec."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from closedloop.server.errors import InvalidArgument
from closedloop.server.executor.scoring import METRICS
from closedloop.server.monitor.performance import judge_performance, relative_drop, score
from closedloop.server.monitor.spec import MonitoringSpec


def test_every_trainer_metric_is_scored_like_sklearn():
    rng = np.random.default_rng(51)
    y_bin = rng.integers(0, 2, 2000)
    proba = np.clip(y_bin * 0.3 + rng.random(2000) * 0.7, 0, 1)
    y_multi, p_multi = rng.integers(0, 3, 2000), rng.integers(0, 3, 2000)
    y_reg = rng.standard_normal(2000)
    p_reg = y_reg + rng.standard_normal(2000) * 0.5
    expected = {
        "accuracy": (skm.accuracy_score(y_bin, proba > 0.5), score("accuracy", y_bin, (proba > 0.5).astype(int))),
        "f1": (skm.f1_score(y_bin, (proba > 0.5).astype(int)), score("f1", y_bin, (proba > 0.5).astype(int))),
        "roc_auc": (skm.roc_auc_score(y_bin, proba), score("roc_auc", y_bin, proba)),
        "log_loss": (skm.log_loss(y_bin, proba), score("log_loss", y_bin, proba)),
        "rmse": (math.sqrt(skm.mean_squared_error(y_reg, p_reg)), score("rmse", y_reg, p_reg)),
        "mae": (skm.mean_absolute_error(y_reg, p_reg), score("mae", y_reg, p_reg)),
        "r2": (skm.r2_score(y_reg, p_reg), score("r2", y_reg, p_reg)),
    }
    assert set(expected) == set(METRICS)  # a new trainer metric needs a numpy twin here
    for name, (sk, ours) in expected.items():
        assert ours == pytest.approx(sk, rel=1e-9, abs=1e-12), name
    assert score("f1", y_multi, p_multi) == pytest.approx(skm.f1_score(y_multi, p_multi, average="macro"))
    assert score("f1", np.array(["buy", "sell", "sell"]), np.array(["sell", "sell", "buy"])) == pytest.approx(0.5)


def test_bad_outcome_columns_are_refused():
    with pytest.raises(ValueError, match="unknown metric"):
        score("sharpe", [1.0], [1.0])
    with pytest.raises(ValueError, match="equal"):
        score("rmse", [1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="two classes"):
        score("roc_auc", [1, 1, 1], [0.2, 0.4, 0.9])


def test_drop_is_relative_and_signed_by_the_metric_direction():
    assert relative_drop("accuracy", 0.8, 0.6) == pytest.approx(0.25)
    assert relative_drop("accuracy", 0.8, 0.88) == pytest.approx(-0.1)  # better: negative drop
    assert relative_drop("rmse", 2.0, 2.5) == pytest.approx(0.25)  # lower is better
    assert relative_drop("rmse", 0.0, 0.3) == pytest.approx(0.3)  # perfect holdout: absolute


def test_severity_is_graded_by_the_size_of_the_drop():
    spec = MonitoringSpec().validate()
    y = np.array([1, 0] * 500)
    half_wrong = y.copy()
    half_wrong[:300] = 1 - half_wrong[:300]  # accuracy 0.7
    verdict = judge_performance("accuracy", 0.9, y, half_wrong, spec)
    assert verdict.value == pytest.approx(0.7) and verdict.drop == pytest.approx(2 / 9)
    assert verdict.severity == "HIGH" and verdict.rows == 1000
    assert verdict.alert_metrics()["performance_drop"] == pytest.approx(2 / 9)
    assert judge_performance("accuracy", 0.72, y, half_wrong, spec).severity is None  # 2.8% drop
    assert [spec.severity_for(d) for d in (0.049, 0.05, 0.12, 0.35, 3.0)] == [None, "LOW", "MEDIUM", "CRITICAL", "CRITICAL"]
    custom = MonitoringSpec(performance_severity=(("MEDIUM", 0.1), ("CRITICAL", 0.3))).validate()
    assert custom.severity_for(0.2) == "MEDIUM"


@pytest.mark.parametrize("changes,field", [
    ({"window_rows": 0}, "monitoring.window_rows"),
    ({"window_rows": None, "window_seconds": None}, "monitoring.window_rows"),
    ({"window_seconds": 0.5}, "monitoring.window_seconds"),
    ({"min_rows": 20_000}, "monitoring.min_rows"),
    ({"features": ("a", "a")}, "monitoring.features"),
    ({"numeric_method": "chi2"}, "monitoring.numeric_method"),
    ({"categorical_method": "psi"}, "monitoring.categorical_method"),
    ({"alpha": 0.0}, "monitoring.alpha"),
    ({"alpha": float("nan")}, "monitoring.alpha"),
    ({"wasserstein_threshold": -1.0}, "monitoring.wasserstein_threshold"),
    ({"js_threshold": 1.5}, "monitoring.js_threshold"),
    ({"psi_bins": 1}, "monitoring.psi_bins"),
    ({"drift_share": 0}, "monitoring.drift_share"),
    ({"sketch_k": True}, "monitoring.sketch_k"),
    ({"performance_severity": (("HIGH", 0.2), ("LOW", 0.05))}, "monitoring.performance_severity"),
    ({"performance_severity": (("LOW", 0.2), ("HIGH", 0.1))}, "monitoring.performance_severity"),
    ({"performance_severity": (("URGENT", 0.2),)}, "monitoring.performance_severity"),
])
def test_spec_validation_names_the_field(changes, field):
    with pytest.raises(InvalidArgument) as err:
        MonitoringSpec(**changes).validate()
    assert [v.field for v in err.value.violations] == [field]


def test_default_spec_is_valid_and_small_windows_get_a_bin_per_row():
    spec = MonitoringSpec().validate()
    assert spec.window_bins == 200  # 10,000-row windows: 200 bins
    assert MonitoringSpec(window_rows=1500, min_rows=100).window_bins == 1500  # KS territory: a bin per row
    assert MonitoringSpec(window_rows=None).window_bins == 200
