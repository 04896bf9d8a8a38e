"""Training data sources against the operator's configuration: SQL as a read-only role of the real
test PostgreSQL (superusers, server-program roles and the service's own role refused; row limit,
statement timeout), files inside the data roots only, entry points registered before any import,
the configuration file, and the synthetic market."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import numpy as np
import pandas as pd
import pytest

from closedloop.server.config import Settings
from closedloop.server.errors import ConfigError
from closedloop.server.executor import synthetic, training_spec
from closedloop.server.executor.datasources import load_frame
from closedloop.server.executor.errors import DataSourceError
from closedloop.server.executor.source_config import DataSources, SqlSourceConfig

NONE = DataSources()


def market_frame(rows: int = 10, scale: float = 1.0) -> pd.DataFrame:
    """A data source function defined in a test module (registered by name in the tests)."""
    assert isinstance(rows, int)  # integral JSON numbers arrive as ints
    return pd.DataFrame({"x": np.arange(rows) * scale, "y": np.arange(rows) % 2})


def not_a_frame() -> list:
    return [1, 2]


def as_role(url: str, role: str, password: str = "") -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{role}:{password}@{host}" if password else f"{role}@{host}"))


@pytest.fixture
async def prices(database_url):
    """A prices table and a login role with SELECT on it and nothing else; the role's name."""
    role = "reader_" + uuid.uuid4().hex[:8]
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("CREATE TABLE prices (t timestamptz, f double precision, label int)")
        await conn.execute("INSERT INTO prices SELECT now() + i * interval '1 minute', i * 0.5, i % 2"
                           " FROM generate_series(1, 20) i")
        await conn.execute("CREATE TABLE secrets (api_key text)")
        await conn.execute(f'CREATE ROLE "{role}" LOGIN')
        await conn.execute(f'GRANT SELECT ON prices TO "{role}"')
        yield role
        await conn.execute(f'DROP OWNED BY "{role}"')
        await conn.execute(f'DROP ROLE "{role}"')
    finally:
        await conn.close()


def sql_sources(url: str, **kw) -> DataSources:
    return DataSources(sql={"prices": SqlSourceConfig(name="prices", dsn=url, **kw)})


def load_sql(sources: DataSources, query: str, **kw) -> pd.DataFrame:
    return load_frame({"sql": {"source": "prices", "query": query}}, sources, **kw)


async def test_sql_source_reads_as_a_read_only_role(database_url, prices):
    sources = sql_sources(as_role(database_url, prices))
    # The worker process has no event loop; here one runs, so load in a thread like a worker would.
    frame = await asyncio.to_thread(load_sql, sources, "SELECT t, f, label FROM prices ORDER BY t")
    assert list(frame.columns) == ["t", "f", "label"] and len(frame) == 20
    assert frame["f"].iloc[-1] == 10.0
    empty = await asyncio.to_thread(load_sql, sources, "SELECT f, label FROM prices WHERE false")
    assert list(empty.columns) == ["f", "label"] and empty.empty
    for query in ("CREATE TABLE sneaky (x int)", "SELECT * FROM no_such_table", "SELECT * FROM secrets"):
        with pytest.raises(DataSourceError, match="query failed"):
            await asyncio.to_thread(load_sql, sources, query)


async def test_copy_to_program_does_nothing_as_the_read_only_role(database_url, prices, tmp_path):
    marker = tmp_path / "pwned"
    query = f"COPY (SELECT 1) TO PROGRAM 'touch {marker}'"
    with pytest.raises(DataSourceError, match="query failed") as err:
        await asyncio.to_thread(load_sql, sql_sources(as_role(database_url, prices)), query)
    assert not marker.exists()
    assert "pg_execute_server_program" in str(err.value) or "permission" in str(err.value).lower()


async def test_a_superuser_source_is_refused_before_the_query_runs(database_url, tmp_path):
    marker = tmp_path / "pwned"
    password_url = as_role(database_url, urlsplit(database_url).username or "postgres", "hunter2")
    with pytest.raises(DataSourceError, match="superuser") as err:
        await asyncio.to_thread(load_sql, sql_sources(password_url), f"COPY (SELECT 1) TO PROGRAM 'touch {marker}'")
    assert not marker.exists()
    assert "hunter2" not in str(err.value) and "postgresql://" not in str(err.value)


async def test_roles_that_reach_outside_the_database_are_refused(database_url, prices):
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f'GRANT pg_execute_server_program TO "{prices}"')
        with pytest.raises(DataSourceError, match="pg_execute_server_program"):
            await asyncio.to_thread(load_sql, sql_sources(as_role(database_url, prices)), "SELECT 1 AS x")
        await conn.execute(f'REVOKE pg_execute_server_program FROM "{prices}"')
        await conn.execute(f'GRANT pg_read_server_files TO "{prices}"')
        with pytest.raises(DataSourceError, match="pg_read_server_files"):
            await asyncio.to_thread(load_sql, sql_sources(as_role(database_url, prices)), "SELECT 1 AS x")
        await conn.execute(f'REVOKE pg_read_server_files FROM "{prices}"')
    finally:
        await conn.close()
    with pytest.raises(DataSourceError, match="service's own role"):
        await asyncio.to_thread(load_sql, sql_sources(as_role(database_url, prices)), "SELECT 1 AS x",
                                service_role=prices)


async def test_row_limit_and_statement_timeout(database_url, prices):
    url = as_role(database_url, prices)
    with pytest.raises(DataSourceError, match="row limit of 5"):
        await asyncio.to_thread(load_sql, sql_sources(url, row_limit=5), "SELECT * FROM prices")
    assert len(await asyncio.to_thread(load_sql, sql_sources(url, row_limit=20), "SELECT * FROM prices")) == 20
    with pytest.raises(DataSourceError, match="statement timeout"):
        await asyncio.to_thread(load_sql, sql_sources(url, statement_timeout_s=0.2), "SELECT pg_sleep(5)")


async def test_sql_errors_quote_neither_the_dsn_nor_row_values(database_url, prices):
    url = as_role(database_url, prices, "hunter2")
    with pytest.raises(DataSourceError) as err:
        await asyncio.to_thread(load_sql, sql_sources(url), "SELECT ('SECRET' || label)::int AS x FROM prices")
    assert "SECRET" not in str(err.value) and "hunter2" not in str(err.value)
    assert "hunter2" not in repr(sql_sources(url))
    with pytest.raises(DataSourceError, match="no SQL source named 'other'"):
        load_frame({"sql": {"source": "other", "query": "SELECT 1"}}, sql_sources(url))


# -- files -----------------------------------------------------------------------------------------

@pytest.fixture
def roots(tmp_path):
    root = tmp_path / "datasets"
    (root / "desk").mkdir(parents=True)
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [0, 1, 0]})
    frame.to_csv(root / "desk" / "d.csv", index=False)
    frame.to_parquet(root / "d.parquet")
    frame.to_parquet(root / "d.bin")
    secret = tmp_path / "secret.csv"
    secret.write_text("SECRET_API_KEY,b\nabc,1\n")
    os.symlink(secret, root / "link.csv")
    return DataSources(file_roots=(root.resolve(),)), frame, secret


def test_files_inside_the_roots(roots, tmp_path):
    sources, frame, _ = roots
    pd.testing.assert_frame_equal(load_frame({"file": {"path": "desk/d.csv"}}, sources), frame)
    pd.testing.assert_frame_equal(load_frame({"file": {"path": "d.parquet"}}, sources), frame)
    absolute = str(tmp_path / "datasets" / "d.bin")
    pd.testing.assert_frame_equal(load_frame({"file": {"path": absolute, "format": "parquet"}}, sources), frame)
    with pytest.raises(DataSourceError, match="csv or parquet"):
        load_frame({"file": {"path": "d.bin"}}, sources)
    with pytest.raises(DataSourceError, match="does not exist"):
        load_frame({"file": {"path": "missing.csv"}}, sources)


@pytest.mark.parametrize("path", ["../secret.csv", "desk/../../secret.csv", "SECRET", "/etc/passwd", "link.csv"])
def test_paths_out_of_the_roots_are_refused_without_reading(roots, tmp_path, path):
    sources, _, secret = roots
    path = str(secret) if path == "SECRET" else path
    with pytest.raises(DataSourceError) as err:
        load_frame({"file": {"path": path}}, sources)
    assert "SECRET_API_KEY" not in str(err.value) and str(secret) not in str(err.value).replace(path, "")
    assert [f for f, _ in sources.problems({"file": {"path": path}})] == ["file.path"]


def test_unreadable_files_do_not_echo_their_content(roots, tmp_path):
    sources, _, _ = roots
    bad = tmp_path / "datasets" / "bad.parquet"
    bad.write_text("SECRET_API_KEY=abc")
    with pytest.raises(DataSourceError, match="cannot be read as parquet") as err:
        load_frame({"file": {"path": "bad.parquet"}}, sources)
    assert "SECRET" not in str(err.value)


def test_registration_accepts_a_file_that_does_not_exist_yet(roots):
    sources, _, _ = roots
    assert sources.problems({"file": {"path": "tomorrow/prices.csv"}}) == []


# -- entry points ----------------------------------------------------------------------------------

def test_entry_points_are_called_by_their_registered_name():
    sources = DataSources(entry_points={"market": f"{__name__}:market_frame", "list": f"{__name__}:not_a_frame",
                                        "gone": f"{__name__}:missing"})
    frame = load_frame({"entry_point": {"name": "market", "kwargs": {"rows": 6.0}}}, sources)
    assert len(frame) == 6
    for name, message in [("list", "not a pandas DataFrame"), ("gone", "no function"),
                          ("os:system", "no entry point named"), (f"{__name__}:market_frame", "no entry point named")]:
        with pytest.raises(DataSourceError, match=message):
            load_frame({"entry_point": {"name": name}}, sources)


def test_an_unregistered_module_is_never_imported(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    module = "side_effect_" + uuid.uuid4().hex[:8]
    (tmp_path / f"{module}.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "def frame():\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sources = DataSources(entry_points={"market": f"{__name__}:market_frame"})
    for name in (f"{module}:frame", module, "market.x"):
        with pytest.raises(DataSourceError, match="no entry point named"):
            load_frame({"entry_point": {"name": name}}, sources)
        assert [f for f, _ in sources.problems({"entry_point": {"name": name}})] == ["entry_point.name"]
    assert not marker.exists() and module not in sys.modules


# -- the configuration -----------------------------------------------------------------------------

def test_configuration_file_and_flags(tmp_path):
    config = tmp_path / "sources.toml"
    config.write_text('file_roots = ["data"]\n[sql.prices]\ndsn = "postgresql://r:pw@db/market"\nrow_limit = 10\n'
                      'statement_timeout = 2.5\n[entry_points]\nticks = "desk.data:load_ticks"\n')
    sources = DataSources.from_settings(Settings(data_dir=tmp_path, data_sources=config,
                                                 data_root=(tmp_path / "more",), entry_point=("bars=desk.data:bars",)))
    assert sources.sql["prices"].row_limit == 10 and sources.sql["prices"].statement_timeout_s == 2.5
    assert sources.file_roots == ((tmp_path / "data").resolve(), (tmp_path / "more").resolve())
    assert sources.entry_points == {"ticks": "desk.data:load_ticks", "bars": "desk.data:bars"}
    narrowed = sources.only_for({"sql": {"source": "prices", "query": "SELECT 1"}})
    assert list(narrowed.sql) == ["prices"] and narrowed.entry_points == {}
    # Nothing configured: the data dir's datasets folder, no SQL, no entry points.
    default = DataSources.from_settings(Settings(data_dir=tmp_path))
    assert default.file_roots == ((tmp_path / "datasets").resolve(),) and not default.sql and not default.entry_points


@pytest.mark.parametrize("text, message", [
    ('[sql.prices]\ndsn = "mysql://u:hunter2@x/y"\n', "postgresql://"),
    ('[sql.prices]\ndsn = "postgresql://u:hunter2@x/y"\nrow_limit = 0\n', "row_limit"),
    ('[sql.prices]\ndsn = "postgresql://u:hunter2@x/y"\npassword = "x"\n', "keys are"),
    ('[sql.prices]\ndsn = "postgresql://u:hunter2@x/y\n', "not valid TOML"),
    ('[entry_points]\nticks = "os.system"\n', "entry point"),
    ('dsn = "postgresql://u:hunter2@x/y"\n', "top-level keys"),
])
def test_bad_configuration_files(tmp_path, text, message):
    config = tmp_path / "sources.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        DataSources.from_settings(Settings(data_dir=tmp_path, data_sources=config))
    assert "hunter2" not in str(err.value)


def test_bad_entry_point_flag():
    with pytest.raises(ConfigError, match="--entry-point"):
        Settings(entry_point=("ticks=os system",))


# -- the rest --------------------------------------------------------------------------------------

def test_normalize_numbers():
    assert training_spec.normalize_numbers({"a": 3.0, "b": [1.0, 2.5], "c": {"d": 0.0}, "e": "x", "f": True}) == \
        {"a": 3, "b": [1, 2.5], "c": {"d": 0}, "e": "x", "f": True}


def test_no_source_is_an_error():
    with pytest.raises(DataSourceError, match="no data source"):
        load_frame({"target": "y"}, NONE)


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
    first = load_frame(spec, NONE, epoch=0)
    assert "next_return" not in first.columns and "direction" in first.columns and len(first) == 800
    second = load_frame(spec, NONE, epoch=1)
    assert second["time"].iloc[0] == first["time"].iloc[200]
    regression = load_frame(dict(spec, target="next_return"), NONE)
    assert "direction" not in regression.columns
    # Any other target name gets the target that fits the metric.
    named = load_frame(dict(spec, target="y", metric="accuracy"), NONE)
    assert set(named["y"]) == {0, 1} and not {"direction", "next_return"} & set(named.columns)
    named = load_frame(dict(spec, target="y", metric="rmse"), NONE)
    assert named["y"].equals(regression["next_return"])
    with pytest.raises(DataSourceError):
        load_frame({"synthetic": {"seed": 1, "drift": 1.5}}, NONE)


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
