"""Training data sources: SQL (against the test database), CSV and Parquet files, entry points,
and the synthetic market."""

from __future__ import annotations

import asyncio

import asyncpg
import numpy as np
import pandas as pd
import pytest

from closedloop.server.executor import datasources, synthetic, training_spec
from closedloop.server.executor.datasources import DataSourceError, data_source, load_frame


@data_source
def market_frame(rows: int = 10, scale: float = 1.0) -> pd.DataFrame:
    """A data source defined in a test module (registered with the decorator)."""
    assert isinstance(rows, int)  # integral JSON numbers arrive as ints
    return pd.DataFrame({"x": np.arange(rows) * scale, "y": np.arange(rows) % 2})


def unmarked_frame() -> pd.DataFrame:
    return pd.DataFrame({"x": [1]})


@data_source
def not_a_frame() -> list:
    return [1, 2]


async def test_sql_source_reads_the_test_database(database_url):
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("CREATE TABLE prices (t timestamptz, f double precision, label int)")
        await conn.execute(
            "INSERT INTO prices SELECT now() + i * interval '1 minute', i * 0.5, i % 2 FROM generate_series(1, 20) i"
        )
    finally:
        await conn.close()
    spec = {"sql": {"dsn": database_url, "query": "SELECT t, f, label FROM prices ORDER BY t"}}
    # The worker process has no event loop; here one runs, so load in a thread like a worker would.
    frame = await asyncio.to_thread(load_frame, spec)
    assert list(frame.columns) == ["t", "f", "label"] and len(frame) == 20
    assert frame["f"].iloc[-1] == 10.0
    empty = await asyncio.to_thread(load_frame, {"sql": {"dsn": database_url, "query": "SELECT f, label FROM prices WHERE false"}})
    assert list(empty.columns) == ["f", "label"] and empty.empty


async def test_sql_source_is_read_only_and_reports_bad_queries(database_url):
    with pytest.raises(DataSourceError, match="sql query failed"):
        await asyncio.to_thread(load_frame, {"sql": {"dsn": database_url, "query": "CREATE TABLE sneaky (x int)"}})
    with pytest.raises(DataSourceError, match="sql query failed"):
        await asyncio.to_thread(load_frame, {"sql": {"dsn": database_url, "query": "SELECT * FROM no_such_table"}})
    with pytest.raises(DataSourceError, match="postgresql"):
        load_frame({"sql": {"dsn": "mysql://x", "query": "SELECT 1"}})


def test_csv_and_parquet_files(tmp_path):
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [0, 1, 0]})
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_parquet(tmp_path / "d.parquet")
    frame.to_parquet(tmp_path / "d.bin")
    pd.testing.assert_frame_equal(load_frame({"file": {"path": str(tmp_path / "d.csv")}}), frame)
    pd.testing.assert_frame_equal(load_frame({"file": {"path": str(tmp_path / "d.parquet")}}), frame)
    pd.testing.assert_frame_equal(load_frame({"file": {"path": str(tmp_path / "d.bin"), "format": "parquet"}}), frame)
    with pytest.raises(DataSourceError, match="csv or parquet"):
        load_frame({"file": {"path": str(tmp_path / "d.bin")}})
    with pytest.raises(DataSourceError, match="does not exist"):
        load_frame({"file": {"path": str(tmp_path / "missing.csv")}})


def test_entry_point_must_be_marked():
    frame = load_frame({"entry_point": {"entry_point": f"{__name__}:market_frame", "kwargs": {"rows": 6.0}}})
    assert len(frame) == 6
    for name, message in [(f"{__name__}:unmarked_frame", "not a data source"), ("os:system", "not a data source"),
                          ("subprocess:run", "not a data source"), ("os.system", "package.module:function"),
                          ("no_such_module_xyz:f", "cannot be imported"), (f"{__name__}:missing", "no function"),
                          (f"{__name__}:not_a_frame", "not a pandas DataFrame")]:
        with pytest.raises(DataSourceError, match=message):
            load_frame({"entry_point": {"entry_point": name}})


def test_normalize_numbers():
    assert training_spec.normalize_numbers({"a": 3.0, "b": [1.0, 2.5], "c": {"d": 0.0}, "e": "x", "f": True}) == \
        {"a": 3, "b": [1, 2.5], "c": {"d": 0}, "e": "x", "f": True}


def test_no_source_is_an_error():
    with pytest.raises(DataSourceError, match="no data source"):
        load_frame({"target": "y"})


def test_synthetic_is_deterministic_and_windows_overlap():
    a = synthetic.generate(seed=9, drift=0.3, rows=1000, offset=0)
    b = synthetic.generate(seed=9, drift=0.3, rows=1000, offset=0)
    pd.testing.assert_frame_equal(a, b)
    later = synthetic.generate(seed=9, drift=0.3, rows=600, offset=400)
    pd.testing.assert_frame_equal(a.iloc[400:].reset_index(drop=True), later)
    other = synthetic.generate(seed=10, drift=0.3, rows=1000, offset=0)
    assert not np.allclose(a["order_flow"], other["order_flow"])
    assert a["time"].is_monotonic_increasing and 0.3 < a["direction"].mean() < 0.7


def test_synthetic_source_drops_the_other_target_and_moves_with_epochs():
    spec = {"synthetic": {"seed": 1, "drift": 0.5, "rows": 800}, "target": "direction"}
    first = load_frame(spec, epoch=0)
    assert "next_return" not in first.columns and "direction" in first.columns and len(first) == 800
    second = load_frame(spec, epoch=1)
    assert second["time"].iloc[0] == first["time"].iloc[200]
    regression = load_frame(dict(spec, target="next_return"))
    assert "direction" not in regression.columns
    # Any other target name gets the target that fits the metric.
    named = load_frame(dict(spec, target="y", metric="accuracy"))
    assert set(named["y"]) == {0, 1} and not {"direction", "next_return"} & set(named.columns)
    named = load_frame(dict(spec, target="y", metric="rmse"))
    assert named["y"].equals(regression["next_return"])
    with pytest.raises(DataSourceError):
        load_frame({"synthetic": {"seed": 1, "drift": 1.5}})


def test_synthetic_drift_erodes_an_old_model():
    from sklearn.linear_model import LogisticRegression

    def split(epoch: int, drift: float):
        f = synthetic.load(seed=4, drift=drift, rows=2000, epoch=epoch, target="direction")
        return f.drop(columns=["time", "direction"]), f["direction"]

    for drift, decays in [(0.0, False), (0.8, True)]:
        X0, y0 = split(0, drift)
        old = LogisticRegression(max_iter=500).fit(X0[:1600], y0[:1600])
        X4, y4 = split(4, drift)
        new = LogisticRegression(max_iter=500).fit(X4[:1600], y4[:1600])
        gap = new.score(X4[1600:], y4[1600:]) - old.score(X4[1600:], y4[1600:])
        assert (gap > 0.05) is decays
