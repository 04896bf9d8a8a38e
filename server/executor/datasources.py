"""Training data sources of a TrainingSpec (protobuf JSON dict): SQL, file, entry point, synthetic.

Each returns a pandas DataFrame; the trainer picks columns, orders by time and splits. Loading runs in
the worker process, so nothing here touches the server's event loop. What a spec may name comes from
the operator's configuration (source_config.DataSources, sent with the job); this module enforces it
again right before reading:
- SQL runs as the configured source's role, only when that role is not a superuser, cannot run
  programs or touch server files (COPY ... TO PROGRAM, pg_read_file) and is not the service's own
  role; in a read-only transaction, with the source's statement timeout and row limit.
- Files are read only inside the data roots, after symlinks are resolved.
- An entry point is looked up in the registered names before its module is imported.
Errors name the source and what the client sent; never a DSN, and never data the client could not
read otherwise (a file's header, a value in a failing row).
"""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

import pandas as pd

from .errors import DataSourceError
from .source_config import DataSources, SqlSourceConfig
from .training_spec import normalize_numbers, source_kind

CONNECT_TIMEOUT_S = 15.0
# Roles that let a query reach outside the database: run programs, read or write server files.
_DANGEROUS_ROLES = ("pg_execute_server_program", "pg_write_server_files", "pg_read_server_files")


def load_frame(spec: dict, sources: DataSources, *, epoch: int = 0, service_role: str | None = None) -> pd.DataFrame:
    """The DataFrame the spec's source yields.

    `epoch` = versions trained so far (synthetic window); `service_role` = the role the service's own
    database connection uses, which a SQL source must not share.
    """
    kind = source_kind(spec)
    if kind == "sql":
        return load_sql(sources.sql_source(str(spec["sql"].get("source", ""))), spec["sql"].get("query", ""),
                        service_role=service_role)
    if kind == "file":
        return load_file(sources, spec["file"].get("path", ""), spec["file"].get("format", ""))
    if kind == "entry_point":
        ep = spec["entry_point"]
        return load_entry_point(sources, ep.get("name", ""), normalize_numbers(ep.get("kwargs") or {}))
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


# -- SQL ---------------------------------------------------------------------------------------------

def load_sql(source: SqlSourceConfig, query: str, *, service_role: str | None = None) -> pd.DataFrame:
    """Run a read-only query as the source's role, within its timeout and row limit."""
    import asyncpg

    if not query.strip():
        raise DataSourceError("sql.query is empty")
    where = f"sql source {source.name!r}"
    try:
        return asyncio.run(asyncio.wait_for(_fetch(source, query, service_role),
                                            CONNECT_TIMEOUT_S + source.statement_timeout_s))
    except DataSourceError:
        raise
    except asyncpg.QueryCanceledError:
        raise DataSourceError(f"{where}: the query ran past the statement timeout "
                              f"({source.statement_timeout_s:g} s)") from None
    except (asyncpg.PostgresSyntaxError, asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError,
            asyncpg.UndefinedFunctionError, asyncpg.ReadOnlySQLTransactionError,
            asyncpg.InsufficientPrivilegeError) as exc:
        # About the query text the client wrote (or what the role may not do): safe to repeat.
        raise DataSourceError(f"{where}: query failed: {exc}") from None
    except (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidPasswordError):
        raise DataSourceError(f"{where}: the server cannot log in with its configured role") from None
    except (asyncpg.InterfaceError, ValueError) as exc:
        # A malformed DSN: its parser's message could quote it, password and all.
        raise DataSourceError(f"{where}: the configured DSN cannot be used ({type(exc).__name__})") from None
    except asyncpg.PostgresError as exc:
        # Other errors (a bad cast, a division by zero) may quote a value of a row: name the error only.
        raise DataSourceError(f"{where}: query failed ({type(exc).__name__}, SQLSTATE {exc.sqlstate})") from None
    except (OSError, asyncio.TimeoutError) as exc:
        # Retryable: the database may be back for the next attempt. The DSN is never in the text.
        raise ConnectionError(f"{where}: cannot reach the database ({type(exc).__name__})") from None


async def _fetch(source: SqlSourceConfig, query: str, service_role: str | None) -> pd.DataFrame:
    import asyncpg

    timeout_ms = int(source.statement_timeout_s * 1000)
    conn = await asyncpg.connect(source.dsn, timeout=CONNECT_TIMEOUT_S, server_settings={
        "statement_timeout": str(timeout_ms), "default_transaction_read_only": "on",
        "application_name": f"closedloop-training:{source.name}"})
    try:
        await _check_role(conn, source, service_role)
        async with conn.transaction(readonly=True):
            stmt = await conn.prepare(query)
            columns = [a.name for a in stmt.get_attributes()]
            rows = []
            async for record in stmt.cursor(prefetch=min(10_000, source.row_limit + 1)):
                rows.append(tuple(record))
                if len(rows) > source.row_limit:
                    raise DataSourceError(f"sql source {source.name!r}: the query returned more than the "
                                          f"source's row limit of {source.row_limit:,} rows")
    finally:
        await conn.close()
    return pd.DataFrame.from_records(rows, columns=columns)


async def _check_role(conn: Any, source: SqlSourceConfig, service_role: str | None) -> None:
    """Refuse a role that can reach outside its database, or that is the service's own.

    The only statement here that is not the client's query: it reads the operator's data source
    (not the service's database, whose SQL lives in server/store/), before the query may run.
    """
    row = await conn.fetchrow(
        "SELECT current_user AS role, r.rolsuper, r.rolcreaterole,"
        " array(SELECT g FROM unnest($1::text[]) g WHERE pg_has_role(current_user, g, 'MEMBER')) AS granted"
        " FROM pg_roles r WHERE r.rolname = current_user", list(_DANGEROUS_ROLES))
    where = f"sql source {source.name!r} (role {row['role']!r})"
    if row["rolsuper"]:
        raise DataSourceError(f"{where}: refusing to run a training query as a superuser; configure a "
                              "login role with SELECT on the training tables only")
    if row["rolcreaterole"] or row["granted"]:
        what = ", ".join(row["granted"]) or "CREATEROLE"
        raise DataSourceError(f"{where}: refusing to run a training query as a role that has {what}")
    if service_role is not None and row["role"] == service_role:
        raise DataSourceError(f"{where}: refusing to run a training query as the service's own role")


# -- files -------------------------------------------------------------------------------------------

def load_file(sources: DataSources, path: str, fmt: str = "") -> pd.DataFrame:
    real = sources.resolve_file(path)
    fmt = (fmt or real.suffix.lstrip(".")).lower()
    if fmt in ("pq", "parquet"):
        reader = pd.read_parquet
    elif fmt in ("csv", "txt"):
        reader = pd.read_csv
    else:
        raise DataSourceError(f"file.format must be csv or parquet, not {fmt!r}")
    try:
        return reader(real)
    except Exception as exc:  # noqa: BLE001 - a reader's message can quote the file: name the type only
        raise DataSourceError(f"file {path!r} cannot be read as {fmt} ({type(exc).__name__})") from None


# -- entry points ------------------------------------------------------------------------------------

def load_entry_point(sources: DataSources, name: str, kwargs: dict[str, Any]) -> pd.DataFrame:
    """Call the function the operator registered as `name`; nothing is imported for other names."""
    target = sources.entry_point_target(name)
    module_name, func_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise DataSourceError(f"entry point {name!r}: its module cannot be imported ({exc})") from None
    fn = getattr(module, func_name, None)
    if fn is None or not callable(fn):
        raise DataSourceError(f"entry point {name!r}: its module has no function {func_name!r}")
    frame = fn(**kwargs)
    if not isinstance(frame, pd.DataFrame):
        raise DataSourceError(f"entry point {name!r} returned {type(frame).__name__}, not a pandas DataFrame")
    return frame
