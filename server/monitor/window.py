"""An observation window of one model version: mergeable partial state, one per server until it closes.

Each server feeds the batches it receives into its own `WindowAccumulator`, flushes `to_bytes()` to the
database now and then, and the one server that closes the window merges every partial with `merge`
(every count exactly, moments up to float rounding), so the verdict is the one a single server that saw
everything would reach. A window is built from the version's reference profile (`for_profile`), which
fixes the watched features, their kinds, the numeric bin edges (histogram.py) and the categorical
vocabularies: windows never mix versions.

Memory is bounded per feature whatever the window's size: a numeric feature holds its bin counts
((bins + 1) x 8 bytes: ~1.7 KB at the default 200 bins) and six numbers; a categorical one a count per
vocabulary entry (at most the profile's `max_categories`) plus "other".

Stored partials carry a format tag (`FORMAT`). A partial written before the bins (numeric features as KLL
sketches, no tag: an OPEN window at the upgrade) is still merged: its counts are read from its sketch's
CDF at the bin edges (`NumericBlock.absorb_sketch`, within that sketch's rank error). A partial counted
over other edges (the spec's bins changed while the window was open) cannot be merged: ValueError, and
the engine closes such a window unjudged, saying why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from closedloop.server.errors import FieldViolation, InvalidArgument
from closedloop.server.monitor import codec
from closedloop.server.monitor.histogram import BinnedFeature, NumericBlock
from closedloop.server.monitor.profile import ReferenceProfile
from closedloop.server.monitor.states import (
    NUMERIC, CategoricalState, NumericState, as_categorical, as_numeric, state_from_dict,
)

FORMAT = 2
DEFAULT_BINS = 200
DEFAULT_PSI_BINS = 10


@dataclass
class Batch:
    """A checked batch, ready to be counted whole or in row ranges (a window boundary may split it)."""

    rows: int
    numbers: np.ndarray  # (numeric features x rows) float64, NaN = missing
    categories: dict[str, list]
    predictions: np.ndarray | list | None


class WindowAccumulator:
    def __init__(self, model_id: str, version: int, names: tuple[str, ...], numeric: NumericBlock,
                 categorical: dict[str, CategoricalState], prediction: NumericBlock | CategoricalState | None) -> None:
        self.model_id = model_id
        self.version = version
        self.names = names  # watched features, in the profile's order
        self.numeric = numeric
        self.numeric_names = tuple(n for n in names if n not in categorical)
        self.categorical = categorical
        self.prediction_state = prediction
        self.rows = 0

    @classmethod
    def for_profile(cls, model_id: str, version: int, profile: ReferenceProfile, watched: tuple[str, ...] = (),
                    bins: int = DEFAULT_BINS, psi_bins: int = DEFAULT_PSI_BINS) -> "WindowAccumulator":
        """An empty window for `profile`'s features (only `watched` ones when given); pass the spec's
        `features`, `window_bins` and `psi_bins`."""
        unknown = [name for name in watched if name not in profile.features]
        if unknown:
            raise InvalidArgument(FieldViolation(
                "monitoring.features", f"not in the version's reference profile: {', '.join(unknown)}"))
        names = tuple(watched or profile.features)
        categorical = {n: profile.features[n].fresh() for n in names if profile.features[n].kind != NUMERIC}
        numeric = NumericBlock(profile.layout([n for n in names if n not in categorical], bins, psi_bins))
        prediction = None
        if profile.prediction is not None:
            prediction = (NumericBlock(profile.layout((), bins, psi_bins, prediction=True))
                          if profile.prediction.kind == NUMERIC else profile.prediction.fresh())
        return cls(model_id, version, names, numeric, categorical, prediction)

    def fresh(self) -> "WindowAccumulator":
        """An empty window like this one (same version, features and bins)."""
        prediction = self.prediction_state
        if prediction is not None:
            prediction = NumericBlock(prediction.layout) if isinstance(prediction, NumericBlock) else prediction.fresh()
        return WindowAccumulator(self.model_id, self.version, self.names, NumericBlock(self.numeric.layout),
                                 {n: s.fresh() for n, s in self.categorical.items()}, prediction)

    @property
    def features(self) -> dict[str, BinnedFeature | CategoricalState]:
        """Each watched feature's state, in the profile's order (what the detectors judge)."""
        numeric = {n: self.numeric.feature(f) for f, n in enumerate(self.numeric_names)}
        return {n: numeric[n] if n in numeric else self.categorical[n] for n in self.names}

    @property
    def prediction(self) -> BinnedFeature | CategoricalState | None:
        if isinstance(self.prediction_state, NumericBlock):
            return self.prediction_state.feature(0)
        return self.prediction_state

    def update(self, columns: Mapping[str, object], predictions=None) -> int:
        """Count one columnar batch; returns its row count (see `check`)."""
        batch = self.check(columns, predictions)
        self.count(batch)
        return batch.rows

    def check(self, columns: Mapping[str, object], predictions=None) -> Batch:
        """The batch converted for counting; InvalidArgument naming the fields when it is bad.

        Columns of features not watched are ignored; a watched feature absent from the batch counts as
        missing for its rows (so a service that stops sending a feature shows up as missing share).
        The whole batch is checked before anything is counted: a bad batch leaves the window untouched.
        """
        lengths = {name: len(values) for name, values in columns.items()}
        if predictions is not None:
            lengths["predictions"] = len(predictions)
        rows = max(lengths.values(), default=0)
        ragged = sorted(name for name, n in lengths.items() if n != rows)
        if ragged:
            raise InvalidArgument([FieldViolation(_field(name), f"has {lengths[name]} rows, the batch has {rows}")
                                   for name in ragged])
        numbers = np.empty((len(self.numeric_names), rows))
        for f, name in enumerate(self.numeric_names):
            numbers[f] = _converted(name, NUMERIC, _numbers, columns[name]) if name in columns else np.nan
        infinite = np.isinf(numbers).any(axis=1)  # one pass for the whole batch
        if infinite.any():
            name = self.numeric_names[int(np.flatnonzero(infinite)[0])]
            raise InvalidArgument(FieldViolation(_field(name), "infinite values are not allowed (a numeric feature)"))
        categories = {name: _converted(name, state.kind, as_categorical, columns[name]) if name in columns
                      else [None] * rows for name, state in self.categorical.items()}
        if predictions is not None and self.prediction_state is not None:
            if isinstance(self.prediction_state, NumericBlock):
                predictions = _converted("predictions", NUMERIC, as_numeric, predictions)
            else:
                predictions = _converted("predictions", self.prediction_state.kind, as_categorical, predictions)
        else:
            predictions = None
        return Batch(rows, numbers, categories, predictions)

    def count(self, batch: Batch, start: int = 0, stop: int | None = None) -> int:
        """Count rows [start, stop) of a checked batch; returns how many."""
        stop = batch.rows if stop is None else min(stop, batch.rows)
        if stop <= start:
            return 0
        whole = start == 0 and stop == batch.rows
        self.numeric.update(batch.numbers if whole else batch.numbers[:, start:stop])
        for name, state in self.categorical.items():
            state.update(batch.categories[name] if whole else batch.categories[name][start:stop])
        if batch.predictions is not None:
            part = batch.predictions if whole else batch.predictions[start:stop]
            if isinstance(self.prediction_state, NumericBlock):
                self.prediction_state.update(np.asarray(part)[None, :])
            else:
                self.prediction_state.update(part)
        self.rows += stop - start
        return stop - start

    def merge(self, other: "WindowAccumulator") -> None:
        if (other.model_id, other.version) != (self.model_id, self.version) or other.names != self.names:
            raise ValueError(f"cannot merge a window of {other.model_id} v{other.version} into one of "
                             f"{self.model_id} v{self.version} (or their watched features differ)")
        self.numeric.merge(other.numeric)
        for name, state in self.categorical.items():
            state.merge(other.categorical[name])
        if self.prediction_state is not None and other.prediction_state is not None:
            self.prediction_state.merge(other.prediction_state)
        self.rows += other.rows

    def to_dict(self) -> dict:
        prediction = self.prediction_state
        return {"format": FORMAT, "model_id": self.model_id, "version": self.version, "rows": self.rows,
                "names": list(self.names), "numeric": self.numeric.to_dict(),
                "categorical": {name: state.to_dict() for name, state in self.categorical.items()},
                "prediction": None if prediction is None else prediction.to_dict()}

    def to_bytes(self) -> bytes:
        return codec.to_bytes(self.to_dict())

    def merge_bytes(self, data: bytes) -> None:
        """Merge a stored partial of this window: the current format, or the old one (KLL sketches)."""
        doc = codec.from_bytes(data)
        if doc.get("format") != FORMAT:
            self._merge_old(doc)
            return
        other = self.fresh()
        other.numeric = _block(doc["numeric"], self.numeric)
        other.categorical = {name: CategoricalState.from_dict(d) for name, d in doc["categorical"].items()}
        if doc.get("prediction") is None or self.prediction_state is None:
            other.prediction_state = None
        elif isinstance(self.prediction_state, NumericBlock):
            other.prediction_state = _block(doc["prediction"], self.prediction_state)
        else:
            other.prediction_state = CategoricalState.from_dict(doc["prediction"])
        other.model_id, other.version, other.rows = doc["model_id"], int(doc["version"]), int(doc["rows"])
        other.names = tuple(doc["names"])
        self.merge(other)

    def _merge_old(self, doc: dict) -> None:
        """A partial written before the bins: {"features": {name: state}, "prediction": state}."""
        states = {name: state_from_dict(d) for name, d in doc["features"].items()}
        if (doc["model_id"], int(doc["version"])) != (self.model_id, self.version) or tuple(states) != self.names:
            raise ValueError("cannot merge an old-format partial of another window")
        for f, name in enumerate(self.numeric_names):
            self.numeric.absorb_sketch(f, states[name])
        self.numeric.rows += int(doc["rows"])
        for name, state in self.categorical.items():
            state.merge(states[name])
        old = None if doc.get("prediction") is None else state_from_dict(doc["prediction"])
        if isinstance(old, NumericState) and isinstance(self.prediction_state, NumericBlock):
            self.prediction_state.absorb_sketch(0, old)
            self.prediction_state.rows += old.rows
        elif isinstance(old, CategoricalState) and isinstance(self.prediction_state, CategoricalState):
            self.prediction_state.merge(old)
        self.rows += int(doc["rows"])


def _block(doc: dict, like: NumericBlock) -> NumericBlock:
    return NumericBlock.from_dict(doc, like.layout)


def _numbers(values) -> np.ndarray:
    return as_numeric(values, finite=False)


def _field(name: str) -> str:
    return "predictions" if name == "predictions" else f'columns["{name}"]'


def _converted(name: str, kind: str, convert, values):
    try:
        return convert(values)
    except ValueError as exc:
        raise InvalidArgument(FieldViolation(_field(name), f"{exc} (a {kind} feature)")) from None
