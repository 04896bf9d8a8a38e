"""Training data sources of a TrainingSpec (protobuf JSON dict): SQL, file, entry point, synthetic.

Each returns a pandas DataFrame; the trainer picks columns, orders by time and splits. Loading runs in
the worker process, so nothing here touches the server's event loop.

Entry points are the one place a spec names code. A spec comes from a client, so naming any
importable function with client-chosen arguments would be remote code execution; only functions
marked with @data_source, or registered in the `closedloop.data_sources` entry-point group of an
installed distribution, are accepted.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import pathlib
import re
from typing import Any, Callable

import pandas as pd

from .errors import PermanentJobError
from .training_spec import normalize_numbers, source_kind

ENTRY_POINT_GROUP = "closedloop.data_sources"
_ENTRY_POINT = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")
SQL_TIMEOUT_S = 600.0


class DataSourceError(PermanentJobError):
    """The spec's data source cannot be used as written."""


def data_source(fn: Callable[..., pd.DataFrame]) -> Callable[..., pd.DataFrame]:
    """Mark a function `module:function` as usable as a TrainingSpec entry_point source."""
    fn.__closedloop_data_source__ = True
    return fn


def load_frame(spec: dict, *, epoch: int = 0) -> pd.DataFrame:
    """The DataFrame the spec's source yields. `epoch` = versions trained so far (synthetic window)."""
    kind = source_kind(spec)
    if kind == "sql":
        return load_sql(spec["sql"].get("dsn", ""), spec["sql"].get("query", ""))
    if kind == "file":
        return load_file(spec["file"].get("path", ""), spec["file"].get("format", ""))
    if kind == "entry_point":
        ep = spec["entry_point"]
        return load_entry_point(ep.get("entry_point", ""), normalize_numbers(ep.get("kwargs") or {}))
    if kind == "synthetic":
        from . import synthetic

        syn = spec["synthetic"]
        try:
            regression = spec.get("metric") in ("rmse", "mae", "r2")
            return synthetic.load(int(syn.get("seed", 0)), float(syn.get("drift", 0.0)),
                                  int(syn.get("rows", 0)), epoch, spec.get("target", "direction"),
                                  regression=regression)
        except ValueError as exc:
            raise DataSourceError(str(exc)) from None
    raise DataSourceError("the training spec names no data source (sql, file, entry_point or synthetic)")


def load_sql(dsn: str, query: str) -> pd.DataFrame:
    """Run a read-only query against a PostgreSQL DSN."""
    if not dsn.startswith(("postgresql://", "postgres://")):
        raise DataSourceError("sql.dsn must be a postgresql:// URL")
    if not query.strip():
        raise DataSourceError("sql.query is empty")

    async def fetch() -> pd.DataFrame:
        import asyncpg

        conn = await asyncpg.connect(dsn, timeout=15)
        try:
            # A training query must not write: run it in a read-only transaction.
            async with conn.transaction(readonly=True):
                stmt = await conn.prepare(query, timeout=SQL_TIMEOUT_S)
                columns = [a.name for a in stmt.get_attributes()]
                records = await stmt.fetch(timeout=SQL_TIMEOUT_S)
        finally:
            await conn.close()
        return pd.DataFrame.from_records([tuple(r) for r in records], columns=columns)

    import asyncpg

    try:
        return asyncio.run(fetch())
    except (asyncpg.PostgresSyntaxError, asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError,
            asyncpg.ReadOnlySQLTransactionError, asyncpg.InsufficientPrivilegeError) as exc:
        raise DataSourceError(f"sql query failed: {exc}") from None


def load_file(path: str, fmt: str = "") -> pd.DataFrame:
    if not path:
        raise DataSourceError("file.path is empty")
    p = pathlib.Path(path).expanduser()
    fmt = (fmt or p.suffix.lstrip(".")).lower()
    if fmt in ("pq", "parquet"):
        reader = pd.read_parquet
    elif fmt in ("csv", "txt"):
        reader = pd.read_csv
    else:
        raise DataSourceError(f"file.format must be csv or parquet, not {fmt!r}")
    if not p.is_file():
        raise DataSourceError(f"file {p} does not exist on the server")
    return reader(p)


def resolve_entry_point(name: str) -> Callable[..., pd.DataFrame]:
    """The marked or registered function `package.module:function`; DataSourceError otherwise."""
    if not _ENTRY_POINT.match(name or ""):
        raise DataSourceError(f"entry_point must look like package.module:function, not {name!r}")
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.value.replace(" ", "") == name or ep.name == name:
            return ep.load()
    module_name, func_name = name.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise DataSourceError(f"entry_point module {module_name!r} cannot be imported: {exc}") from None
    fn = getattr(module, func_name, None)
    if fn is None or not callable(fn):
        raise DataSourceError(f"{name!r}: no function {func_name!r} in {module_name}")
    if not getattr(fn, "__closedloop_data_source__", False):
        raise DataSourceError(
            f"{name!r} is not a data source: mark it with @closedloop.server.executor.datasources.data_source "
            f"or register it in the {ENTRY_POINT_GROUP!r} entry-point group"
        )
    return fn


def load_entry_point(name: str, kwargs: dict[str, Any]) -> pd.DataFrame:
    fn = resolve_entry_point(name)
    frame = fn(**kwargs)
    if not isinstance(frame, pd.DataFrame):
        raise DataSourceError(f"{name} returned {type(frame).__name__}, not a pandas DataFrame")
    return frame
