"""Monitoring state: profiles and windows round-trip through storage, merge exactly, stay small."""

from __future__ import annotations

import json

import numpy as np
import pytest

from closedloop.server.errors import InvalidArgument
from closedloop.server.monitor import codec
from closedloop.server.monitor.profile import ReferenceProfile
from closedloop.server.monitor.states import OTHER, CategoricalState, NumericState
from closedloop.server.monitor.window import WindowAccumulator


def merged_from_bytes(window, blobs):
    """What the closing server does: an empty window of the version, every stored partial merged in."""
    merged = window.fresh()
    for blob in blobs:
        merged.merge_bytes(blob)
    return merged


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
    merged = merged_from_bytes(whole, [partial.to_bytes() for partial in partials])  # flushed partials

    assert merged.rows == whole.rows == 30000
    for name in ("ret", "spread", "venue"):
        a, b = merged.features[name], whole.features[name]
        assert (a.rows, a.missing) == (b.rows, b.missing)
    assert merged.features["venue"].counts.tolist() == whole.features["venue"].counts.tolist()
    assert merged.prediction.count == 30000
    ret, exact = merged.features["ret"], np.concatenate(raw)
    assert ret.mean == pytest.approx(np.nanmean(exact), abs=1e-12)
    assert ret.std == pytest.approx(np.nanstd(exact), rel=1e-9)
    # bin counts: exact, and the same as one accumulator's
    assert ret.counts.tolist() == whole.features["ret"].counts.tolist()
    present = np.sort(exact[~np.isnan(exact)])
    assert ret.cdf_at_edges().tolist() == (np.searchsorted(present, ret.edges, side="right") / len(present)).tolist()


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
    """Serialized window state per numeric feature at the default 200 bins: (201 edges + 1) x 8 bytes of
    counts plus six numbers, ~1.7 KB whatever the rows (10,000 models x 50 numeric features: ~0.85 GB of
    partial state if every one of them had an open window at once); in memory the same plus the
    version's bin layout (edges and lookup grid, ~15 KB per feature), shared by all its windows."""
    rng = np.random.default_rng(4)
    profile = ReferenceProfile.build({f"x{i}": rng.standard_normal(20_000) for i in range(50)})
    window = WindowAccumulator.for_profile("m", 1, profile)
    sizes = {}
    for rows in (10_000, 100_000, 1_000_000):
        while window.rows < rows:
            window.update({f"x{i}": rng.standard_normal(10_000) * 3 for i in range(50)})
        sizes[rows] = len(window.to_bytes()) / 50
    assert sizes[1_000_000] < 1_800 and sizes[1_000_000] - sizes[10_000] < 1, sizes  # (row counts' digits)
    assert window.numeric.counts.nbytes / 50 <= 202 * 8


@pytest.mark.parametrize("values", [
    np.round(np.random.default_rng(6).standard_normal(5000), 1),  # discrete: many values equal an edge
    np.random.default_rng(7).lognormal(0.0, 2.0, 5000),  # heavy right tail: crowded grid cells
    np.concatenate([np.full(2000, -0.0), np.full(2000, 0.0), np.random.default_rng(8).standard_normal(1000)]),
])
def test_bin_counts_are_exact_at_every_edge(values):
    rng = np.random.default_rng(9)
    profile = ReferenceProfile.build({"x": values})
    window = WindowAccumulator.for_profile("m", 1, profile)
    batch = rng.choice(values, 3000) * rng.choice([1.0, 1.0, 1.0 + 1e-9, -1.0, 50.0], 3000)
    batch[:5] = np.nan
    window.update({"x": batch})
    x = window.features["x"]
    present = np.sort(batch[5:])
    assert x.count == 2995 and x.missing == 5
    assert np.array_equal(np.cumsum(x.counts)[:-1], np.searchsorted(present, x.edges, side="right"))
    below, above = present[present < x.edges[0]], present[present > x.edges[-1]]
    assert x.low == pytest.approx((x.edges[0] - below).sum()) and x.high == pytest.approx((above - x.edges[-1]).sum())


def test_a_batch_counted_in_row_ranges_counts_as_the_whole():
    """The engine splits a batch at a window boundary: the two parts together are the whole batch."""
    rng = np.random.default_rng(10)
    profile = ReferenceProfile.build(frame(rng, 5000), predictions=rng.random(5000))
    whole = WindowAccumulator.for_profile("m", 1, profile)
    first, second = whole.fresh(), whole.fresh()
    data, predictions = frame(rng, 1000), rng.random(1000)
    whole.update(data, predictions)
    batch = first.check(data, predictions)
    assert first.count(batch, 0, 300) == 300 and second.count(batch, 300) == 700
    first.merge(second)
    assert first.rows == whole.rows == 1000
    assert first.numeric.counts.tolist() == whole.numeric.counts.tolist()
    assert first.prediction_state.counts.tolist() == whole.prediction_state.counts.tolist()
    assert first.categorical["venue"].counts.tolist() == whole.categorical["venue"].counts.tolist()
    assert first.features["ret"].mean == pytest.approx(whole.features["ret"].mean, abs=1e-12)


def old_format_partial(window, columns):
    """A partial as servers stored it before the bins: every feature a KLL sketch state, no format tag."""
    features = {}
    for name in window.names:
        if name in window.categorical:
            state = window.categorical[name].fresh()
            state.update(columns[name])
        else:
            state = NumericState(200)
            state.update(np.asarray(columns[name], dtype=np.float64))
        features[name] = state.to_dict()
    rows = len(next(iter(columns.values())))
    return codec.to_bytes({"model_id": window.model_id, "version": window.version, "rows": rows,
                           "features": features, "prediction": None})


def test_an_old_format_partial_is_merged_through_its_sketch():
    """An OPEN window at the upgrade holds KLL partials: a close merges them, their bin counts read from
    the sketch's CDF at the edges (within its rank error), moments and categories exactly."""
    rng = np.random.default_rng(11)
    profile = ReferenceProfile.build(frame(rng, 20_000))
    window = WindowAccumulator.for_profile("m", 1, profile)
    old, new = frame(rng, 4000), frame(rng, 1000)
    new_part = window.fresh()
    new_part.update(new)
    merged = merged_from_bytes(window, [old_format_partial(window, old), new_part.to_bytes()])
    exact = WindowAccumulator.for_profile("m", 1, profile)
    exact.update(old)
    exact.update(new)
    assert merged.rows == exact.rows == 5000
    for name in ("ret", "spread"):
        a, b = merged.features[name], exact.features[name]
        assert (a.count, a.missing) == (b.count, b.missing)
        assert a.mean == pytest.approx(b.mean, abs=1e-12) and a.std == pytest.approx(b.std, rel=1e-9)
        assert np.abs(a.cdf_at_edges() - b.cdf_at_edges()).max() <= 0.8 * NumericState(200).sketch.normalized_rank_error(False)
    assert merged.features["venue"].counts.tolist() == exact.features["venue"].counts.tolist()
    with pytest.raises(ValueError, match="other bin edges"):  # counted with other bins: refused, not mixed
        WindowAccumulator.for_profile("m", 1, profile, bins=100).merge_bytes(new_part.to_bytes())


def test_reference_reads_are_remembered_until_the_state_changes():
    rng = np.random.default_rng(5)
    values = rng.standard_normal(3000)
    state = NumericState(200)
    state.update(values[:2000])
    assert abs(state.quantiles(np.array([0.5]))[0] - np.median(values[:2000])) < 0.1
    assert state.cdf(np.array([0.0]))[0] == pytest.approx(0.5, abs=0.05)
    state.update(values[2000:] + 5.0)  # moves the median: the remembered reads are dropped
    assert state.quantiles(np.array([0.9]))[0] > 3.0
    assert state.cdf(np.array([0.0]))[0] < 0.4
