"""Scoring of models: evaluation metrics by name, with the direction that counts as better.

Champion and challenger are scored by the same function on the same holdout; `improvement` turns
a pair of scores into "how much better the challenger is" whatever the metric's direction.

numpy and scikit-learn are imported inside the scoring functions: the spec check reads the metric
table (names, directions, tasks) on the RegisterModel path, which must not load the training stack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    # "classification" metrics need a classifier; "regression" ones a regressor.
    task: str
    score: Callable[[Any, Any, Any], float]  # (estimator, X, y) -> score


def _accuracy(est, X, y) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(y, est.predict(X)))


def _f1(est, X, y) -> float:
    import numpy as np
    from sklearn.metrics import f1_score

    labels = np.unique(y)
    # Binary targets score the positive (larger) class; more classes average per class.
    if len(labels) <= 2 and len(getattr(est, "classes_", labels)) <= 2:
        pos = est.classes_[-1] if hasattr(est, "classes_") else labels[-1]
        return float(f1_score(y, est.predict(X), average="binary", pos_label=pos, zero_division=0))
    return float(f1_score(y, est.predict(X), average="macro", zero_division=0))


def _scores(est, X):
    """Probabilities when the estimator has them, else decision values (roc_auc accepts both)."""
    if hasattr(est, "predict_proba"):
        try:
            return est.predict_proba(X), True
        except AttributeError:  # e.g. SGDClassifier with hinge loss exposes the name but refuses
            pass
    return est.decision_function(X), False


def _roc_auc(est, X, y) -> float:
    import numpy as np
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < 2:
        raise ValueError("roc_auc needs both classes in the holdout; enlarge holdout_fraction")
    scores, is_proba = _scores(est, X)
    if scores.ndim == 2 and scores.shape[1] == 2:
        scores = scores[:, 1]
    if scores.ndim == 1:
        return float(roc_auc_score(y, scores))
    if not is_proba:
        raise ValueError("multi-class roc_auc needs an estimator with predict_proba")
    return float(roc_auc_score(y, scores, multi_class="ovr", labels=est.classes_))


def _log_loss(est, X, y) -> float:
    from sklearn.metrics import log_loss

    if not hasattr(est, "predict_proba"):
        raise ValueError(f"log_loss needs predict_proba, which {type(est).__name__} lacks")
    return float(log_loss(y, est.predict_proba(X), labels=est.classes_))


def _rmse(est, X, y) -> float:
    from sklearn.metrics import mean_squared_error

    return float(math.sqrt(mean_squared_error(y, est.predict(X))))


def _mae(est, X, y) -> float:
    from sklearn.metrics import mean_absolute_error

    return float(mean_absolute_error(y, est.predict(X)))


def _r2(est, X, y) -> float:
    from sklearn.metrics import r2_score

    return float(r2_score(y, est.predict(X)))


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("accuracy", True, "classification", _accuracy),
        Metric("f1", True, "classification", _f1),
        Metric("roc_auc", True, "classification", _roc_auc),
        Metric("log_loss", False, "classification", _log_loss),
        Metric("rmse", False, "regression", _rmse),
        Metric("mae", False, "regression", _mae),
        Metric("r2", True, "regression", _r2),
    )
}


def get_metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; one of {', '.join(METRICS)}") from None


def improvement(metric: str, champion: float | None, challenger: float | None) -> float | None:
    """Challenger minus champion in the better direction (positive: the challenger is better)."""
    if champion is None or challenger is None:
        return None
    delta = challenger - champion
    return delta if get_metric(metric).higher_is_better else -delta


def should_promote(metric: str, champion: float | None, challenger: float, margin: float) -> bool:
    """Promote a challenger that beats the champion by at least `margin` (strictly better at 0).

    No champion (first version, or one that cannot score this data) means promote.
    """
    if champion is None or (isinstance(champion, float) and math.isnan(champion)):
        return True
    if math.isnan(challenger):
        return False
    gain = improvement(metric, champion, challenger)
    return gain > 0 and gain >= margin - 1e-12
