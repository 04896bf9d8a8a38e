"""The reference profile of a trained version: what its training data and predictions looked like.

Built by the trainer from the frame it fitted on (all of it is at hand, so the categorical vocabulary is
the exact top `max_categories`), stored with the version, and the reference every later window of that
version is judged against: a window counts its numeric values into bins cut at this profile's quantiles
(`layout`, histogram.py). The reference sketch uses a larger `k` than windows (default 1000, rank error
~0.3%, ~8-12 KB per feature) because there is one per version and its error adds to every comparison.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from closedloop.server.monitor import codec
from closedloop.server.monitor.histogram import BinLayout
from closedloop.server.monitor.states import (
    CATEGORICAL, CategoricalState, FeatureState, NumericState, as_categorical, as_numeric, column_kind,
    state_from_dict,
)

REFERENCE_SKETCH_K = 1000
MAX_CATEGORIES = 50


@dataclass
class ReferenceProfile:
    features: dict[str, FeatureState]
    prediction: FeatureState | None = None
    metric: str | None = None  # the version's evaluation metric (a name from executor/scoring.py)
    holdout_metric: float | None = None  # its score on the holdout it was promoted on
    # Bin layouts of windows judged against this profile, by (features, bins, PSI bins): built once.
    _layouts: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def build(cls, columns: Mapping[str, object], predictions=None, *, metric: str | None = None,
              holdout_metric: float | None = None, sketch_k: int = REFERENCE_SKETCH_K,
              max_categories: int = MAX_CATEGORIES) -> "ReferenceProfile":
        """Profile columns (feature -> numbers or strings) and optionally the model's predictions on them."""
        lengths = {name: len(values) for name, values in columns.items()}
        if predictions is not None:
            lengths["prediction"] = len(predictions)
        if len(set(lengths.values())) > 1:
            raise ValueError(f"columns differ in length: {lengths}")
        features = {name: _profile_column(name, values, sketch_k, max_categories) for name, values in columns.items()}
        prediction = None if predictions is None else _profile_column("prediction", predictions, sketch_k, max_categories)
        return cls(features, prediction, metric, holdout_metric)

    @property
    def rows(self) -> int:
        return next(iter(self.features.values())).rows if self.features else 0

    def layout(self, names: Sequence[str], bins: int, psi_bins: int, prediction: bool = False) -> BinLayout:
        """The bins a window counts these numeric features (or the prediction) into; remembered."""
        key = (tuple(names), bins, psi_bins, prediction)
        found = self._layouts.get(key)
        if found is None:
            refs = [self.prediction] if prediction else [self.features[name] for name in names]
            found = self._layouts[key] = BinLayout.for_references(refs, bins, psi_bins)
        return found

    def summary(self) -> dict:
        """What a person reads about the profile: rows, each feature's kind, the metric and holdout value."""
        return {"rows": self.rows, "features": {name: state.kind for name, state in self.features.items()},
                "prediction": None if self.prediction is None else self.prediction.kind,
                "metric": self.metric, "holdout_metric": self.holdout_metric}

    def to_dict(self) -> dict:
        return {
            "features": {name: state.to_dict() for name, state in self.features.items()},
            "prediction": None if self.prediction is None else self.prediction.to_dict(),
            "metric": self.metric,
            "holdout_metric": self.holdout_metric,
        }

    @classmethod
    def from_dict(cls, doc: dict) -> "ReferenceProfile":
        return cls(
            {name: state_from_dict(state) for name, state in doc["features"].items()},
            None if doc.get("prediction") is None else state_from_dict(doc["prediction"]),
            doc.get("metric"),
            doc.get("holdout_metric"),
        )

    def to_json(self) -> dict:
        return codec.to_json(self.to_dict())

    @classmethod
    def from_json(cls, doc: dict) -> "ReferenceProfile":
        return cls.from_dict(codec.from_json(doc))

    def to_bytes(self) -> bytes:
        return codec.to_bytes(self.to_dict())

    @classmethod
    def from_bytes(cls, data: bytes) -> "ReferenceProfile":
        return cls.from_dict(codec.from_bytes(data))


def _profile_column(name: str, values, sketch_k: int, max_categories: int) -> FeatureState:
    try:
        if column_kind(values) == CATEGORICAL:
            return CategoricalState.from_values(as_categorical(values), max_categories)
        state = NumericState(sketch_k)
        state.update(as_numeric(values))
        return state
    except ValueError as exc:
        raise ValueError(f"column {name!r}: {exc}") from None
