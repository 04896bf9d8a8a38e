"""Realised performance of a window: the model's own metric on outcomes, against its holdout score.

Metric names and their direction are the trainer's (`executor/scoring.py`), so a performance window
speaks the same language as promotion; the scores themselves are computed here with numpy from
(outcome, prediction) pairs, so monitoring needs no scikit-learn. Conventions follow the trainer's:
binary f1 scores the larger label as positive, more classes average per class (macro); roc_auc and
log_loss take the predicted probability (or score) of the larger label, binary only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from closedloop.server.executor.scoring import get_metric
from closedloop.server.monitor.spec import MonitoringSpec


@dataclass(frozen=True)
class PerformanceVerdict:
    metric: str
    value: float
    holdout: float
    drop: float  # relative, positive = worse than on the holdout, whatever the metric's direction
    severity: str | None  # None: below the lowest configured drop, no alert
    rows: int

    def alert_metrics(self) -> dict[str, float]:
        return {"performance_drop": self.drop, self.metric: self.value, f"holdout_{self.metric}": self.holdout,
                "window_rows": float(self.rows)}


def score(metric: str, outcomes, predictions) -> float:
    """`metric` of `predictions` against realised `outcomes` (equal-length, non-empty)."""
    get_metric(metric)  # unknown names fail with the trainer's message
    y, p = np.asarray(outcomes), np.asarray(predictions)
    if y.shape != p.shape or y.ndim != 1 or len(y) == 0:
        raise ValueError(f"outcomes and predictions must be equal, non-empty columns (got {y.shape} and {p.shape})")
    if metric == "accuracy":
        return float((y == p).mean())
    if metric == "f1":
        return _f1(y, p)
    if metric in ("roc_auc", "log_loss"):
        positive = _binary_positive(y, metric)
        return _roc_auc(y == positive, p.astype(np.float64)) if metric == "roc_auc" \
            else _log_loss(y == positive, p.astype(np.float64))
    y, p = y.astype(np.float64), p.astype(np.float64)
    if metric == "rmse":
        return float(np.sqrt(((y - p) ** 2).mean()))
    if metric == "mae":
        return float(np.abs(y - p).mean())
    total = ((y - y.mean()) ** 2).sum()  # r2
    residual = ((y - p) ** 2).sum()
    return float(1.0 - residual / total) if total > 0 else (1.0 if residual == 0 else 0.0)


def relative_drop(metric: str, holdout: float, value: float) -> float:
    """How much worse `value` is than `holdout`, relative to |holdout| (absolute when holdout is ~0)."""
    worse = holdout - value if get_metric(metric).higher_is_better else value - holdout
    return worse / abs(holdout) if abs(holdout) > 1e-12 else worse


def judge_performance(metric: str, holdout: float, outcomes, predictions, spec: MonitoringSpec) -> PerformanceVerdict:
    value = score(metric, outcomes, predictions)
    drop = relative_drop(metric, holdout, value)
    return PerformanceVerdict(metric, value, holdout, drop, spec.severity_for(drop), len(outcomes))


def _f1(y: np.ndarray, p: np.ndarray) -> float:
    labels = np.unique(np.concatenate([y, p]))
    positives = labels[-1:] if len(labels) <= 2 else labels
    scores = []
    for label in positives:
        tp = np.sum((p == label) & (y == label))
        denominator = np.sum(p == label) + np.sum(y == label)
        scores.append(2 * tp / denominator if denominator else 0.0)
    return float(np.mean(scores)) if scores else 0.0


def _binary_positive(y: np.ndarray, metric: str):
    labels = np.unique(y)
    if len(labels) != 2:
        raise ValueError(f"{metric} needs outcomes of exactly two classes here, got {len(labels)}")
    return labels[-1]


def _roc_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    # Mann-Whitney U: the chance a random positive outscores a random negative (ties count half).
    ranks = rankdata(scores)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _log_loss(positive: np.ndarray, probabilities: np.ndarray) -> float:
    if ((probabilities < 0) | (probabilities > 1)).any():
        raise ValueError("log_loss needs predicted probabilities in [0, 1]")
    clipped = np.clip(probabilities, 1e-15, 1 - 1e-15)
    return float(-np.mean(np.where(positive, np.log(clipped), np.log(1 - clipped))))
