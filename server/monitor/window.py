"""An observation window of one model version: mergeable partial state, one per server until it closes.

Each server feeds the batches it receives into its own `WindowAccumulator`, flushes `to_bytes()` to the
database now and then, and the one server that closes the window merges every partial with `merge`
(counts and moments exactly, sketches by KLL merge), so the verdict is the one a single server that saw
everything would reach. A window is built from the version's reference profile (`for_profile`), which
fixes the watched features, their kinds and the categorical vocabularies: windows never mix versions.

Memory is bounded per feature whatever the window's size: a numeric feature holds one KLL sketch
(k=200: ~2.2 KB serialized at 10^4 rows, ~2.5 KB at 10^6), four numbers and, until they are folded into the
sketch, at most `states.MAX_BUFFERED` raw float32 values (64 KB; the engine flushes a part at 4,096 rows);
a categorical one a count per vocabulary entry (at most the profile's `max_categories`) plus "other".
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from closedloop.server.errors import FieldViolation, InvalidArgument
from closedloop.server.monitor import codec
from closedloop.server.monitor.profile import ReferenceProfile
from closedloop.server.monitor.states import (
    NUMERIC, FeatureState, as_categorical, as_numeric, state_from_dict,
)


class WindowAccumulator:
    def __init__(self, model_id: str, version: int, features: dict[str, FeatureState],
                 prediction: FeatureState | None) -> None:
        self.model_id = model_id
        self.version = version
        self.features = features
        self.prediction = prediction
        self.rows = 0

    @classmethod
    def for_profile(cls, model_id: str, version: int, profile: ReferenceProfile,
                    watched: tuple[str, ...] = (), sketch_k: int = 200) -> "WindowAccumulator":
        """An empty window for `profile`'s features (only `watched` ones when given); pass the spec's
        `features` and `window_sketch_k`."""
        unknown = [name for name in watched if name not in profile.features]
        if unknown:
            raise InvalidArgument(FieldViolation(
                "monitoring.features", f"not in the version's reference profile: {', '.join(unknown)}"))
        names = watched or tuple(profile.features)
        features = {name: profile.features[name].fresh(sketch_k) for name in names}
        prediction = None if profile.prediction is None else profile.prediction.fresh(sketch_k)
        return cls(model_id, version, features, prediction)

    def update(self, columns: Mapping[str, object], predictions=None) -> int:
        """Count one columnar batch; returns its row count.

        Columns of features not watched are ignored; a watched feature absent from the batch counts as
        missing for its rows (so a service that stops sending a feature shows up as missing share).
        The whole batch is checked before anything is counted: a bad batch leaves the window untouched.
        """
        lengths = {name: len(values) for name, values in columns.items()}
        if predictions is not None:
            lengths["predictions"] = len(predictions)
        if not lengths:
            return 0
        rows = max(lengths.values())
        ragged = sorted(name for name, n in lengths.items() if n != rows)
        if ragged:
            raise InvalidArgument([FieldViolation(_field(name), f"has {lengths[name]} rows, the batch has {rows}")
                                   for name in ragged])
        checked = [(state, _checked(name, state, columns[name] if name in columns else None, rows))
                   for name, state in self.features.items()]
        if self.prediction is not None and predictions is not None:
            checked.append((self.prediction, _checked("predictions", self.prediction, predictions, rows)))
        for state, values in checked:
            state.update(values)
        self.rows += rows
        return rows

    def merge(self, other: "WindowAccumulator") -> None:
        if (other.model_id, other.version) != (self.model_id, self.version) or other.features.keys() != self.features.keys():
            raise ValueError(f"cannot merge a window of {other.model_id} v{other.version} into one of "
                             f"{self.model_id} v{self.version} (or their watched features differ)")
        for name, state in self.features.items():
            state.merge(other.features[name])
        if self.prediction is not None and other.prediction is not None:
            self.prediction.merge(other.prediction)
        self.rows += other.rows

    def to_dict(self) -> dict:
        return {"model_id": self.model_id, "version": self.version, "rows": self.rows,
                "features": {name: state.to_dict() for name, state in self.features.items()},
                "prediction": None if self.prediction is None else self.prediction.to_dict()}

    @classmethod
    def from_dict(cls, doc: dict) -> "WindowAccumulator":
        window = cls(doc["model_id"], int(doc["version"]),
                     {name: state_from_dict(state) for name, state in doc["features"].items()},
                     None if doc.get("prediction") is None else state_from_dict(doc["prediction"]))
        window.rows = int(doc["rows"])
        return window

    def to_bytes(self) -> bytes:
        return codec.to_bytes(self.to_dict())

    @classmethod
    def from_bytes(cls, data: bytes) -> "WindowAccumulator":
        return cls.from_dict(codec.from_bytes(data))


def _field(name: str) -> str:
    return "predictions" if name == "predictions" else f'columns["{name}"]'


def _checked(name: str, state: FeatureState, values, rows: int):
    """The column converted for `state`, all-missing when absent; InvalidArgument naming it when bad."""
    if state.kind == NUMERIC:
        if values is None:
            return np.full(rows, np.nan)
        convert = as_numeric
    else:
        if values is None:
            return [None] * rows
        convert = as_categorical
    try:
        return convert(values)
    except ValueError as exc:
        raise InvalidArgument(FieldViolation(_field(name), f"{exc} (a {state.kind} feature)")) from None
