"""Monitoring state: profiles and windows round-trip through storage, merge exactly, stay small."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from closedloop.server.errors import InvalidArgument
from closedloop.server.monitor import codec
from closedloop.server.monitor.profile import ReferenceProfile
from closedloop.server.monitor.states import MAX_BUFFERED, OTHER, CategoricalState, NumericState
from closedloop.server.monitor.window import WindowAccumulator


def frame(rng, rows):
    return {
        "ret": rng.standard_normal(rows),
        "spread": rng.exponential(2.0, rows),
        "venue": list(rng.choice(["XNYS", "XNAS", "BATS", "ARCA"], rows, p=[0.4, 0.3, 0.2, 0.1])),
    }


def test_profile_records_counts_moments_missing_and_categories():
    rng = np.random.default_rng(1)
    data = frame(rng, 5000)
    data["ret"][:250] = np.nan
    data["venue"][:100] = [None] * 100
    profile = ReferenceProfile.build(data, predictions=rng.random(5000), metric="rmse", holdout_metric=0.7)
    ret, venue = profile.features["ret"], profile.features["venue"]
    assert (ret.rows, ret.missing, ret.count) == (5000, 250, 4750)
    assert ret.missing_share == pytest.approx(0.05)
    assert ret.mean == pytest.approx(np.nanmean(data["ret"]))
    assert ret.std == pytest.approx(np.nanstd(data["ret"]))
    assert isinstance(venue, CategoricalState) and venue.vocabulary == ("ARCA", "BATS", "XNAS", "XNYS")
    assert venue.missing == 100 and venue.counts.sum() == 4900 and venue.other == 0
    assert profile.prediction is not None and profile.prediction.count == 5000
    assert (profile.metric, profile.holdout_metric, profile.rows) == ("rmse", 0.7, 5000)


def test_category_cap_folds_rare_values_into_other_and_windows_count_unseen_there():
    values = ["a"] * 50 + ["b"] * 30 + ["c"] * 10 + ["d"] * 5 + ["e"] * 5
    state = CategoricalState.from_values(values, max_categories=2)
    assert state.vocabulary == ("a", "b") and state.counts.tolist() == [50, 30] and state.other == 20
    window = state.fresh()
    window.update(["a", "zzz", "b", "zzz", None])
    assert window.counts.tolist() == [1, 1] and window.other == 2 and window.missing == 1
    assert window.frequencies().tolist() == pytest.approx([0.25, 0.25, 0.5])
    assert OTHER == "__other__"


def test_profile_round_trips_through_json_and_bytes():
    rng = np.random.default_rng(2)
    profile = ReferenceProfile.build(frame(rng, 3000), predictions=list(rng.choice(["buy", "sell"], 3000)),
                                     metric="f1", holdout_metric=0.61)
    as_json = json.loads(json.dumps(profile.to_json()))  # really JSON: what a jsonb column holds
    blob = profile.to_bytes()
    stored = codec.from_bytes(blob)
    assert codec.from_json(as_json) == stored
    for restored in (ReferenceProfile.from_json(as_json), ReferenceProfile.from_bytes(blob)):
        # (compared before any query: a KLL sketch re-serializes differently once it sorted itself)
        assert restored.to_dict() == stored
        ranks = np.array([0.1, 0.5, 0.9])
        assert restored.features["spread"].quantiles(ranks).tolist() == profile.features["spread"].quantiles(ranks).tolist()
    # bytes keep sketches raw: smaller than the base64 of the JSON form
    assert len(blob) < len(json.dumps(profile.to_json()))


def test_partials_merge_to_what_one_accumulator_sees():
    rng = np.random.default_rng(3)
    profile = ReferenceProfile.build(frame(rng, 20000), predictions=rng.random(20000))
    whole = WindowAccumulator.for_profile("m", 4, profile)
    partials = [WindowAccumulator.for_profile("m", 4, profile) for _ in range(3)]
    raw = []
    for i in range(30):  # 30 batches of 1,000 rows spread over three "servers"
        batch, predictions = frame(rng, 1000), rng.random(1000)
        batch["ret"][:7] = np.nan
        whole.update(batch, predictions)
        partials[i % 3].update(batch, predictions)
        raw.append(batch["ret"])
    merged = WindowAccumulator.from_bytes(partials[0].to_bytes())  # a flushed partial, read back
    for partial in partials[1:]:
        merged.merge(WindowAccumulator.from_bytes(partial.to_bytes()))

    assert merged.rows == whole.rows == 30000
    for name in ("ret", "spread", "venue"):
        a, b = merged.features[name], whole.features[name]
        assert (a.rows, a.missing) == (b.rows, b.missing)
    assert merged.features["venue"].counts.tolist() == whole.features["venue"].counts.tolist()
    assert merged.prediction.count == 30000
    ret, exact = merged.features["ret"], np.concatenate(raw)
    assert ret.mean == pytest.approx(np.nanmean(exact), abs=1e-12)
    assert ret.std == pytest.approx(np.nanstd(exact), rel=1e-9)
    # quantiles: ranks of the merged sketch's quantiles within its documented rank error of the truth
    ranks = np.linspace(0.05, 0.95, 19)
    present = np.sort(exact[~np.isnan(exact)])
    true_ranks = np.searchsorted(present, ret.quantiles(ranks), side="right") / len(present)
    assert np.abs(true_ranks - ranks).max() <= ret.rank_error


def test_merge_refuses_another_version():
    profile = ReferenceProfile.build({"x": np.arange(100.0)})
    with pytest.raises(ValueError, match="v2"):
        WindowAccumulator.for_profile("m", 1, profile).merge(WindowAccumulator.for_profile("m", 2, profile))


def test_bad_batch_is_rejected_whole_with_the_field_named():
    profile = ReferenceProfile.build({"x": np.arange(100.0), "side": ["b", "s"] * 50})
    window = WindowAccumulator.for_profile("m", 1, profile)
    window.update({"x": np.ones(3), "side": ["b", "s", None]})
    before = window.to_dict()
    cases = [
        ({"x": np.ones(3), "side": ["b", "s"]}, 'columns["side"]'),  # ragged
        ({"x": np.array([1.0, np.inf, 2.0]), "side": ["b"] * 3}, 'columns["x"]'),
        ({"x": ["1", "b", "c"], "side": ["b"] * 3}, 'columns["x"]'),
        ({"x": np.ones(3), "side": [1, 2, 3]}, 'columns["side"]'),
    ]
    for batch, field in cases:
        with pytest.raises(InvalidArgument) as err:
            window.update(batch)
        assert [v.field for v in err.value.violations] == [field]
    assert window.to_dict() == before  # nothing of a rejected batch was counted
    with pytest.raises(InvalidArgument, match="monitoring.features"):
        WindowAccumulator.for_profile("m", 1, profile, watched=("x", "nope"))


def test_absent_watched_feature_counts_as_missing():
    profile = ReferenceProfile.build({"x": np.arange(100.0), "y": np.arange(100.0)})
    window = WindowAccumulator.for_profile("m", 1, profile)
    window.update({"x": np.ones(10), "unwatched": np.ones(10)})
    assert window.features["y"].missing == 10 and window.features["x"].missing == 0 and window.rows == 10


def test_memory_per_feature_is_bounded_whatever_the_window_size():
    """Serialized window state per numeric feature (k=200, the default for large windows):
    ~2.2 KB at 10^4 rows, ~2.5 KB at 10^6, bounded by ~3 KB. So 10,000 models x 50 numeric features
    cost ~1.2-1.5 GB of partial state if every one of them had an open window at once. In memory, a
    state also buffers at most MAX_BUFFERED (16,384) raw float32 values, 64 KB, plus the batch being
    counted, before they go into the sketch."""
    rng = np.random.default_rng(4)
    sizes = {}
    state = NumericState(200)
    for rows in (10_000, 100_000, 1_000_000):
        state.update(rng.standard_normal(rows - state.rows))
        blob = WindowAccumulator("m", 1, {"x": state}, None).to_bytes()
        sizes[rows] = len(blob)
    assert sizes[10_000] < 2_600 and sizes[1_000_000] < 3_000, sizes
    assert sizes[1_000_000] - sizes[10_000] < 600  # grows with log(n) only

    live = NumericState(200)
    for _ in range(200):  # never serialized: the state folds its buffer into the sketch itself
        live.update(rng.standard_normal(1000))
        assert live.buffered <= MAX_BUFFERED
    assert sum(b.nbytes for b in live._buffer) <= MAX_BUFFERED * 4 == 64 * 1024
    assert live.sketch.n == 200_000 and live.buffered == 0


def test_buffered_values_reach_the_sketch_however_the_state_is_read():
    """Counting only buffers; reading, merging, serializing or pickling (the engine's worker process)
    sees every value, and a read is not stale after a later update."""
    rng = np.random.default_rng(5)
    values = rng.standard_normal(3000)
    state = NumericState(200)
    state.update(values[:2000])
    assert state.buffered == 2000 and state.count == 2000
    assert abs(state.quantiles(np.array([0.5]))[0] - np.median(values[:2000])) < 0.1
    state.update(values[2000:] + 5.0)  # moves the median: the remembered quantiles are dropped
    assert state.quantiles(np.array([0.9]))[0] > 3.0

    other = NumericState(200)
    other.update(values)
    merged = NumericState(200)
    merged.merge(state)
    merged.merge(other)
    assert merged.buffered == 3000  # state was folded by its reads, other still buffers its values
    assert merged.sketch.n == 6000 and merged.count == 6000

    window = WindowAccumulator("m", 1, {"x": NumericState(200)}, None)
    window.update({"x": values})
    copy = pickle.loads(pickle.dumps(window))  # what the engine hands its worker: the raw buffer, unsketched
    assert copy.features["x"].buffered == 3000
    restored = WindowAccumulator.from_bytes(copy.to_bytes())
    x = restored.features["x"]
    assert x.sketch.n == 3000 and x.buffered == 0 and x.mean == pytest.approx(values.mean())
    ranks = np.linspace(0.05, 0.95, 19)
    assert np.abs(x.quantiles(ranks) - np.quantile(values, ranks)).max() < 0.05
