"""The scikit-learn trainer in-process: metrics, estimator resolution, full vs incremental, refit
fallback, promotion by margin, time-ordered holdout, and the skops artifact safety checks."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from closedloop.server.executor import artifacts, scoring, synthetic
from closedloop.server.executor.source_config import DataSources
from closedloop.server.executor.trainer import run_training
from closedloop.server.executor.training_spec import SpecError, build_estimator, resolve_estimator
from closedloop.server.executor.training_spec import check_spec as check_spec_async

SGD = {"estimator": "linear_model.SGDClassifier", "params": {"loss": "log_loss", "random_state": 7.0},
       "synthetic": {"seed": 11, "drift": 0.7, "rows": 2000}, "target": "direction", "metric": "accuracy"}


def train(spec: dict, mode: str = "FULL", champion: dict | None = None, epoch: int = 0,
          sources: DataSources | None = None) -> dict:
    progress: list[str] = []
    result = run_training({"spec": spec, "mode": mode, "champion": champion, "epoch": epoch, "sources": sources},
                          lambda p, m: progress.append(m))
    result["progress"] = progress
    return result


def as_champion(result: dict, version: int = 1) -> dict:
    return {"version": version, "artifact": result["artifact"], "sha256": result["sha256"],
            "data_end": result["data_end"]}


# -- metrics -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def classification():
    frame = synthetic.load(seed=5, drift=0.0, rows=1500, epoch=0, target="direction")
    X, y = frame.drop(columns=["time", "direction"]), frame["direction"]
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=500).fit(X[:1200], y[:1200]), X[1200:], y[1200:]


@pytest.fixture(scope="module")
def regression():
    frame = synthetic.load(seed=5, drift=0.0, rows=1500, epoch=0, target="next_return")
    X, y = frame.drop(columns=["time", "next_return"]), frame["next_return"]
    from sklearn.linear_model import Ridge

    return Ridge().fit(X[:1200], y[:1200]), X[1200:], y[1200:]


@pytest.mark.parametrize("name", ["accuracy", "f1", "roc_auc", "log_loss"])
def test_classification_metrics_match_sklearn(name, classification):
    from sklearn import metrics as skm

    est, X, y = classification
    expected = {
        "accuracy": lambda: skm.accuracy_score(y, est.predict(X)),
        "f1": lambda: skm.f1_score(y, est.predict(X)),
        "roc_auc": lambda: skm.roc_auc_score(y, est.predict_proba(X)[:, 1]),
        "log_loss": lambda: skm.log_loss(y, est.predict_proba(X)),
    }[name]()
    assert scoring.get_metric(name).score(est, X, y) == pytest.approx(expected)


@pytest.mark.parametrize("name", ["rmse", "mae", "r2"])
def test_regression_metrics_match_sklearn(name, regression):
    from sklearn import metrics as skm

    est, X, y = regression
    pred = est.predict(X)
    expected = {"rmse": math.sqrt(skm.mean_squared_error(y, pred)), "mae": skm.mean_absolute_error(y, pred),
                "r2": skm.r2_score(y, pred)}[name]
    assert scoring.get_metric(name).score(est, X, y) == pytest.approx(expected)


def test_roc_auc_uses_decision_function_without_probabilities(classification):
    from sklearn.svm import LinearSVC

    _, X, y = classification
    est = LinearSVC().fit(X, y)
    assert 0.5 < scoring.get_metric("roc_auc").score(est, X, y) <= 1.0
    with pytest.raises(ValueError, match="predict_proba"):
        scoring.get_metric("log_loss").score(est, X, y)


def test_multiclass_metrics():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    y = np.argmax(X, axis=1)
    est = LogisticRegression(max_iter=500).fit(X, y)
    for name in ("accuracy", "f1", "roc_auc", "log_loss"):
        assert math.isfinite(scoring.get_metric(name).score(est, X, y))


@pytest.mark.parametrize("name,champion,challenger,gain", [
    ("accuracy", 0.6, 0.7, 0.1), ("r2", 0.5, 0.4, -0.1), ("roc_auc", 0.7, 0.75, 0.05), ("f1", 0.5, 0.55, 0.05),
    ("rmse", 2.0, 1.5, 0.5), ("mae", 1.0, 1.2, -0.2), ("log_loss", 0.69, 0.6, 0.09),
])
def test_improvement_is_in_the_better_direction(name, champion, challenger, gain):
    assert scoring.improvement(name, champion, challenger) == pytest.approx(gain)
    assert scoring.should_promote(name, champion, challenger, 0.0) is (gain > 0)


def test_should_promote_by_margin():
    assert scoring.should_promote("accuracy", None, 0.1, 5.0)  # first version
    assert scoring.should_promote("accuracy", 0.60, 0.62, 0.02)
    assert not scoring.should_promote("accuracy", 0.60, 0.615, 0.02)
    assert not scoring.should_promote("accuracy", 0.60, 0.60, 0.0)  # a tie is not better
    assert scoring.should_promote("rmse", 1.0, 0.9, 0.1)
    assert not scoring.should_promote("rmse", 1.0, 0.95, 0.1)
    with pytest.raises(ValueError):
        scoring.get_metric("precision")


# -- estimators and specs -------------------------------------------------------------------------

@pytest.mark.parametrize("name", [
    "os.system", "builtins.eval", "sklearn", "linear_model", "../linear_model.Ridge", "linear_model._base.LinearRegression",
    "utils.Bunch", "base.BaseEstimator", "linear_model.ridge_regression", "subprocess.Popen", "nosuchmodule.Thing",
    "linear_model.Ridge; import os", "",
])
def test_estimators_outside_sklearn_are_refused(name):
    with pytest.raises(SpecError):
        build_estimator(name, {})


def test_estimator_names_and_params():
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import SGDClassifier

    assert resolve_estimator("linear_model.SGDClassifier") is SGDClassifier
    assert resolve_estimator("sklearn.ensemble.RandomForestClassifier") is RandomForestClassifier
    est = build_estimator("ensemble.RandomForestClassifier", {"n_estimators": 12.0, "max_depth": 3.0,
                                                              "max_features": 0.5})
    assert est.n_estimators == 12 and isinstance(est.n_estimators, int) and est.max_features == 0.5
    with pytest.raises(SpecError, match="params"):
        build_estimator("linear_model.Ridge", {"no_such_param": 1})


def check_spec(spec: dict) -> list[tuple[str, str]]:
    return asyncio.run(check_spec_async(spec, DataSources()))


def test_check_spec_reports_each_field():
    assert check_spec(SGD) == []
    bad = {"estimator": "os.system", "metric": "precision", "holdout_fraction": 0.95, "promotion_margin": -1}
    fields = {f for f, _ in check_spec(bad)}
    assert fields == {"estimator", "metric", "target", "holdout_fraction", "promotion_margin", "source"}
    mismatch = dict(SGD, metric="rmse")
    assert [f for f, _ in check_spec(mismatch)] == ["metric"]
    assert [f for f, _ in check_spec(dict(SGD, synthetic={"drift": 2}))] == ["synthetic.drift"]


# -- training runs ----------------------------------------------------------------------------------

def test_full_training_first_version_is_promoted():
    r = train(SGD)
    assert r["promote"] and r["champion_metric"] is None and 0.5 < r["challenger_metric"] <= 1
    assert r["train_rows"] == 1600 and r["holdout_rows"] == 400 and not r["refit_fallback"]
    assert r["progress"][0] == "loading data" and r["progress"][-1] == "saving"
    assert r["sha256"] == artifacts.digest(r["artifact"])
    assert type(artifacts.loads(r["artifact"], r["sha256"])).__name__ == "SGDClassifier"


def test_incremental_updates_the_champion_on_newer_rows_only():
    first = train(SGD)
    r = train(SGD, "INCREMENTAL", as_champion(first), epoch=1)
    # Window 1 starts 500 rows later: its training rows newer than the champion's are the last 500.
    assert r["train_rows"] == 500 and not r["refit_fallback"]
    assert r["champion_metric"] is not None and r["data_end"] > first["data_end"]
    same = train(SGD, "INCREMENTAL", as_champion(r, 2), epoch=1)
    assert same["train_rows"] == 0 and "model unchanged" in same["notes"][0] and not same["promote"]


def test_incremental_without_partial_fit_falls_back_to_refit():
    spec = dict(SGD, estimator="ensemble.RandomForestClassifier", params={"n_estimators": 10, "random_state": 0})
    first = train(spec)
    r = train(spec, "INCREMENTAL", as_champion(first), epoch=1)
    assert r["refit_fallback"] and r["train_rows"] == 1600 and "partial_fit" in r["notes"][0]
    no_champion = train(SGD, "INCREMENTAL")
    assert no_champion["refit_fallback"] and no_champion["promote"]


def test_promotion_depends_on_the_margin():
    first = train(SGD)
    drifted = train(SGD, "FULL", as_champion(first), epoch=2)
    assert drifted["improvement"] > 0 and drifted["promote"]  # the market moved; the champion decayed
    strict = train(dict(SGD, promotion_margin=0.5), "FULL", as_champion(first), epoch=2)
    assert not strict["promote"] and strict["improvement"] == pytest.approx(drifted["improvement"])


def test_regression_spec_with_lower_is_better_metric():
    spec = {"estimator": "linear_model.SGDRegressor", "params": {"random_state": 1},
            "synthetic": {"seed": 2, "drift": 0.0, "rows": 1200}, "target": "next_return", "metric": "rmse",
            "holdout_fraction": 0.25}
    r = train(spec)
    assert r["metric"] == "rmse" and r["holdout_rows"] == 300 and r["promote"]
    worse = train(dict(spec, params={"random_state": 1, "alpha": 1000.0}), "FULL", as_champion(r), epoch=0)
    assert worse["challenger_metric"] >= worse["champion_metric"] - 1e-12
    assert not worse["promote"]


def test_holdout_is_the_latest_rows_by_time(tmp_path):
    frame = synthetic.load(seed=3, drift=0.0, rows=500, epoch=0, target="direction")
    shuffled = frame.sample(frac=1.0, random_state=1)
    path = tmp_path / "data.csv"
    shuffled.to_csv(path, index=False)
    spec = {"estimator": "linear_model.LogisticRegression", "file": {"path": str(path)}, "target": "direction",
            "time_column": "time", "metric": "accuracy", "holdout_fraction": 0.2}
    r = train(spec, sources=DataSources(file_roots=(tmp_path.resolve(),)))
    assert r["data_end"] == pd.Timestamp(frame["time"].iloc[399]).isoformat()
    assert r["data_window"].startswith("time " + pd.Timestamp(frame["time"].iloc[0]).isoformat())


def test_missing_columns_are_spec_errors(tmp_path):
    path = tmp_path / "d.csv"
    pd.DataFrame({"a": [1, 2, 3, 4], "y": [0, 1, 0, 1]}).to_csv(path, index=False)
    pd.DataFrame({"SECRET_API_KEY": [1, 2, 3, 4], "y": [0, 1, 0, 1]}).to_csv(tmp_path / "s.csv", index=False)
    base = {"estimator": "linear_model.LogisticRegression", "file": {"path": str(path)}, "metric": "accuracy"}
    sources = DataSources(file_roots=(tmp_path.resolve(),))
    with pytest.raises(SpecError, match="target"):
        train(dict(base, target="nope"), sources=sources)
    with pytest.raises(SpecError, match="feature"):
        train(dict(base, target="y", features=["a", "b"]), sources=sources)
    with pytest.raises(SpecError, match="time_column"):
        train(dict(base, target="y", time_column="t"), sources=sources)
    # The data's own columns are not the client's to read: errors name only the spec's columns.
    with pytest.raises(SpecError) as err:
        train(dict(base, file={"path": "s.csv"}, target="nope"), sources=sources)
    assert "SECRET_API_KEY" not in str(err.value)


# -- artifacts --------------------------------------------------------------------------------------

class SneakyEstimator(ClassifierMixin, BaseEstimator):
    """Not from sklearn: an artifact containing it must not load."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self


def test_skops_refuses_untrusted_types_and_wrong_digests(tmp_path):
    data = artifacts.dumps(SneakyEstimator().fit([[0], [1]], [0, 1]))
    with pytest.raises(artifacts.UntrustedArtifact, match="SneakyEstimator"):
        artifacts.loads(data)
    good = train(SGD)["artifact"]
    with pytest.raises(artifacts.UntrustedArtifact, match="digest"):
        artifacts.loads(good, "0" * 64)
    path, sha = artifacts.save(tmp_path, "desk/fx:eurusd", 3, good)
    assert path == tmp_path / "artifacts" / "desk%2Ffx%3Aeurusd" / "3.skops"
    assert artifacts.read(path, sha) == good
    path.write_bytes(good[:-1] + b"x")
    with pytest.raises(artifacts.UntrustedArtifact):
        artifacts.read(path, sha)
    assert artifacts.model_folder_name("..") == "%2E%2E"


def test_random_forest_artifacts_load_with_sklearn_internal_types():
    spec = dict(SGD, estimator="ensemble.RandomForestClassifier", params={"n_estimators": 3})
    r = train(spec)
    assert type(artifacts.loads(r["artifact"], r["sha256"])).__name__ == "RandomForestClassifier"
