"""The built-in scikit-learn trainer: one retraining attempt, from a model's TrainingSpec.

Runs in a worker process (job_kinds.train). Input is a plain payload built by the runner:
  model_id, mode ("FULL" | "INCREMENTAL"), spec (TrainingSpec as protobuf JSON), epoch (versions
  trained so far), champion (None or {version, artifact: bytes, sha256, data_end}), job_id, token,
  sources (the operator's DataSources, narrowed to what this spec names), service_role (the role
  of the service's own database connection, which a SQL source must not be).
Output is a plain dict: scores, the promotion decision, the challenger's skops bytes and its reference
profile (the training rows' sketches, for monitoring); the runner
allocates the version number and writes the artifact inside the transaction that completes the job,
so only the attempt that still holds the lease ever produces a version.

- Estimators are resolved inside the `sklearn` namespace only: a client names a class, never code.
- Full: fit on the training window. Incremental: partial_fit a copy of the champion on the training
  rows newer than the champion's data (its `data_end`); an estimator without partial_fit, a missing
  champion or a changed estimator class falls back to a full refit, and the result says so.
- The holdout is the latest `holdout_fraction` of rows by the time column; champion and challenger
  are scored on exactly those rows.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..monitor.profile import ReferenceProfile
from . import artifacts, scoring
from .datasources import load_frame
from .source_config import DataSources
from .training_spec import DEFAULT_HOLDOUT, SpecError, build_estimator, time_column_of

Report = Callable[[float, str], None]


def prepare_frame(frame: pd.DataFrame, spec: dict) -> tuple[pd.DataFrame, pd.Series, pd.Series | None]:
    """(X, y, time or None): columns checked, rows in time order, incomplete rows dropped."""
    target = spec.get("target", "")
    time_col = time_column_of(spec)
    # The messages name only columns the spec names: the data's own columns are not the client's to read.
    if target not in frame.columns:
        raise SpecError(f"target column {target!r} is not in the data")
    if time_col and time_col not in frame.columns:
        raise SpecError(f"time_column {time_col!r} is not in the data")
    features = list(spec.get("features") or [])
    if features:
        missing = [f for f in features if f not in frame.columns]
        if missing:
            raise SpecError(f"feature columns not in the data: {', '.join(missing)}")
    else:
        # Every numeric (or bool) column but the target and the time: text and timestamps need
        # encoding the spec does not describe, so they are only used when listed explicitly.
        features = [c for c in frame.columns
                    if c not in (target, time_col) and pd.api.types.is_numeric_dtype(frame[c])]
        if not features:
            raise SpecError("no numeric feature columns in the data; list them in features")
    used = features + [target] + ([time_col] if time_col else [])
    frame = frame[used].dropna()
    if time_col and (pd.api.types.is_object_dtype(frame[time_col]) or pd.api.types.is_string_dtype(frame[time_col])):
        # CSV files (and some SQL drivers) give timestamps as text: order them as times, not strings.
        try:
            frame[time_col] = pd.to_datetime(frame[time_col], utc=True)
        except (ValueError, TypeError):
            pass
    if time_col:
        frame = frame.sort_values(time_col, kind="stable")
    frame = frame.reset_index(drop=True)
    times = frame[time_col] if time_col else None
    return frame[features], frame[target], times


def _fmt_point(value: Any) -> str:
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, (np.integer, int)):
        return str(int(value))
    if isinstance(value, (np.floating, float)):
        return repr(float(value))
    return str(value)


def _after(times: pd.Series | None, data_end: str | None, n: int) -> np.ndarray:
    """Mask of the rows newer than a version's data_end (a time value, or a row number)."""
    if data_end is None:
        return np.ones(n, dtype=bool)
    if times is None:
        return np.arange(n) > int(data_end)
    if pd.api.types.is_datetime64_any_dtype(times):
        end = pd.Timestamp(data_end)
        if times.dt.tz is None and end.tzinfo is not None:
            end = end.tz_localize(None)
        elif times.dt.tz is not None and end.tzinfo is None:
            end = end.tz_localize("UTC")
        return (times > end).to_numpy()
    if pd.api.types.is_numeric_dtype(times):
        return (times > float(data_end)).to_numpy()
    return (times.astype(str) > data_end).to_numpy()


def _score(metric: scoring.Metric, est: Any, X: pd.DataFrame, y: pd.Series) -> float:
    value = metric.score(est, X, y)
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"{metric.name} is not finite ({value})")
    return value


def load_training_window(spec: dict, epoch: int, sources: DataSources | None = None,
                         service_role: str | None = None) -> tuple[pd.DataFrame, pd.Series, pd.Series | None, int]:
    """(X, y, time or None, n_train) of the model's `epoch`-th training run: the first n_train rows train,
    the rest is the holdout. Data only through the operator's `sources` (datasources.load_frame)."""
    frame = load_frame(spec, sources or DataSources(), epoch=epoch, service_role=service_role)
    X, y, times = prepare_frame(frame, spec)
    holdout_fraction = float(spec.get("holdout_fraction") or DEFAULT_HOLDOUT)
    n = len(X)
    n_train = n - max(1, int(math.ceil(n * holdout_fraction)))
    if n_train < 2:
        raise SpecError(f"{n} usable rows leave {n_train} for training; need more data or a smaller holdout")
    return X, y, times, n_train


def reference_profile(model: Any, X_train: pd.DataFrame, metric: str, holdout_metric: float) -> bytes:
    """The version's reference profile (monitor/profile.py) of the rows it was trained on and of its
    predictions on them, in its stored form: what monitoring compares later windows with."""
    columns = {str(name): _profile_column(X_train[name]) for name in X_train.columns}
    predictions = _profile_column(pd.Series(np.asarray(model.predict(X_train))))
    return ReferenceProfile.build(columns, predictions, metric=metric, holdout_metric=holdout_metric).to_bytes()


def _profile_column(column: pd.Series):
    if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        return column.to_numpy(dtype=np.float64)
    return [None if pd.isna(v) else str(v) for v in column]


def profile_version(spec: dict, version: int, artifact: bytes, sha256: str, metric: str,
                    holdout_metric: float, sources: DataSources | None = None) -> bytes:
    """A reference profile for a version trained before profiles existed: its training window reloaded
    from the data source (the window of its training run, as the trainer chose it) and its artifact."""
    X, _, _, n_train = load_training_window(spec, max(0, version - 1), sources)
    return reference_profile(artifacts.loads(artifact, sha256), X.iloc[:n_train], metric, holdout_metric)


def run_training(payload: dict, report: Report) -> dict:
    spec = payload["spec"]
    mode = payload["mode"]
    metric = scoring.get_metric(payload.get("metric") or spec.get("metric", ""))
    margin = float(payload.get("margin", spec.get("promotion_margin", 0.0)) or 0.0)
    champion_info = payload.get("champion")
    notes: list[str] = []

    report(0.05, "loading data")
    X, y, times, n_train = load_training_window(spec, int(payload.get("epoch", 0)), payload.get("sources"),
                                                payload.get("service_role"))
    n_hold = len(X) - n_train
    X_train, y_train, X_hold, y_hold = X.iloc[:n_train], y.iloc[:n_train], X.iloc[n_train:], y.iloc[n_train:]
    train_times = times.iloc[:n_train] if times is not None else None
    if train_times is not None:
        data_window = f"{time_column_of(spec)} {_fmt_point(train_times.iloc[0])} .. {_fmt_point(train_times.iloc[-1])}"
        data_end = _fmt_point(train_times.iloc[-1])
    else:
        data_window = f"rows 0 .. {n_train - 1}"
        data_end = str(n_train - 1)

    challenger = build_estimator(spec["estimator"], spec.get("params"))
    from sklearn.base import is_classifier

    if metric.task == "classification" and not is_classifier(challenger):
        raise SpecError(f"metric {metric.name} needs a classifier; {spec['estimator']} is not one")
    champion = None
    if champion_info is not None:
        report(0.1, "loading champion")
        champion = artifacts.loads(champion_info["artifact"], champion_info.get("sha256"))

    refit_fallback = False
    rows_used = n_train
    if mode == "INCREMENTAL":
        reason = None
        if champion is None:
            reason = "no current version to update"
        elif not hasattr(challenger, "partial_fit"):
            reason = f"{type(challenger).__name__} has no partial_fit"
        elif type(champion) is not type(challenger):
            reason = f"the estimator changed ({type(champion).__name__} -> {type(challenger).__name__})"
        if reason is not None:
            refit_fallback = True
            notes.append(f"incremental retrain fell back to a full refit: {reason}")
        else:
            newer = _after(train_times, champion_info.get("data_end"), n_train)
            rows_used = int(newer.sum())
            challenger = artifacts.loads(champion_info["artifact"])  # an independent copy to update
            if rows_used == 0:
                notes.append(f"no training rows newer than version {champion_info['version']}: model unchanged")
            else:
                report(0.3, f"updating ({rows_used} new rows)")
                kwargs = {"classes": champion.classes_} if is_classifier(challenger) else {}
                _fit(challenger.partial_fit, X_train[newer], y_train[newer], **kwargs)
    if mode == "FULL" or refit_fallback:
        report(0.3, f"fitting ({n_train} rows)")
        _fit(challenger.fit, X_train, y_train)

    report(0.75, "evaluating")
    challenger_score = _score(metric, challenger, X_hold, y_hold)
    champion_score = None
    if champion is not None:
        try:
            champion_score = _score(metric, champion, X_hold, y_hold)
        except Exception as exc:  # noqa: BLE001 - a champion unusable on today's data cannot defend its title
            notes.append(f"champion cannot score the holdout ({type(exc).__name__}: {exc}); not compared")
    promote = scoring.should_promote(metric.name, champion_score, challenger_score, margin)

    report(0.85, "profiling")
    profile = reference_profile(challenger, X_train, metric.name, challenger_score)
    report(0.9, "saving")
    data = artifacts.dumps(challenger)
    return {
        "metric": metric.name,
        "challenger_metric": challenger_score,
        "champion_metric": champion_score,
        "champion_version": champion_info["version"] if champion_info else 0,
        "improvement": scoring.improvement(metric.name, champion_score, challenger_score),
        "promote": promote,
        "refit_fallback": refit_fallback,
        "train_rows": rows_used,
        "holdout_rows": n_hold,
        "data_window": data_window,
        "data_end": data_end,
        "artifact": data,
        "sha256": artifacts.digest(data),
        "profile": profile,
        "notes": notes,
    }


def _fit(method: Callable, X: pd.DataFrame, y: pd.Series, **kwargs: Any) -> None:
    from sklearn.utils._param_validation import InvalidParameterError

    try:
        method(X, y, **kwargs)
    except InvalidParameterError as exc:  # bad params in the spec: retrying cannot help
        raise SpecError(f"estimator params: {exc}") from None
