"""The operator's data-source configuration: what a model's training spec may read.

A spec comes from a client, so everything that reaches outside the service is the operator's to
grant, and a spec only names what was granted:
- SQL sources: named DSNs in the data-sources file (`--data-sources`), each with a row limit and a
  statement timeout; a spec says `sql { source: "prices", query: ... }` and never sees the DSN.
- File roots: folders a file source must stay inside after symlinks are resolved (`--data-root`,
  repeatable, and `file_roots` in the file; none configured: `<data-dir>/datasets`).
- Entry points: names bound to `module:function` (`--entry-point NAME=module:function`, repeatable,
  and `[entry_points]` in the file); a spec names the binding, never a module.

The file is TOML (or JSON when its name ends in .json):

    file_roots = ["/srv/closedloop/datasets"]
    [sql.prices]
    dsn = "postgresql://closedloop_reader:secret@db.internal/market"
    row_limit = 500000           # default 1,000,000
    statement_timeout = 120      # seconds, default 300
    [entry_points]
    ticks = "desk_data.loaders:load_ticks"

This module loads no pandas and imports no entry point: RegisterModel checks specs with it in the
server process, and the worker resolves the same names again right before it reads.
"""

from __future__ import annotations

import json
import os
import pathlib
import tomllib
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from ..config import ENTRY_POINT_NAME, ENTRY_POINT_TARGET, Settings
from ..errors import ConfigError
from .errors import DataSourceError

DEFAULT_ROW_LIMIT = 1_000_000
DEFAULT_STATEMENT_TIMEOUT_S = 300.0
_FILE_KEYS = {"sql", "file_roots", "entry_points"}
_SQL_KEYS = {"dsn", "row_limit", "statement_timeout"}


@dataclass(frozen=True)
class SqlSourceConfig:
    name: str
    dsn: str = field(repr=False)  # holds a password: never in a repr, an error or a log line
    row_limit: int = DEFAULT_ROW_LIMIT
    statement_timeout_s: float = DEFAULT_STATEMENT_TIMEOUT_S


@dataclass(frozen=True)
class DataSources:
    """What specs may name. Picklable: the runner sends the part a job uses to its worker."""

    sql: Mapping[str, SqlSourceConfig] = field(default_factory=dict)
    file_roots: tuple[pathlib.Path, ...] = ()
    entry_points: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> "DataSources":
        """The file (if any) plus the flags; ConfigError for anything malformed."""
        raw: dict[str, Any] = {}
        if settings.data_sources is not None:
            raw = _read_file(settings.data_sources)
        base = settings.data_sources.parent if settings.data_sources is not None else pathlib.Path.cwd()
        sql = {name: _sql_source(name, value) for name, value in (raw.get("sql") or {}).items()}
        roots = [base / pathlib.Path(r).expanduser() for r in raw.get("file_roots") or []]
        roots += list(settings.data_root)
        if not roots:
            roots = [pathlib.Path(settings.data_dir) / "datasets"]
        entry_points = dict(raw.get("entry_points") or {})
        entry_points.update(item.partition("=")[::2] for item in settings.entry_point)
        for name, target in entry_points.items():
            if not (isinstance(target, str) and ENTRY_POINT_NAME.match(name) and ENTRY_POINT_TARGET.match(target)):
                raise ConfigError(f"entry point {name!r}: must be NAME = \"package.module:function\"")
        return cls(sql=sql, file_roots=tuple(pathlib.Path(os.path.realpath(r)) for r in roots),
                   entry_points=entry_points)

    # -- the checks RegisterModel runs (nothing is read, nothing imported) ------------------------

    def problems(self, spec: dict) -> list[tuple[str, str]]:
        """(field, description) for a spec's source that names what the operator did not grant."""
        if "sql" in spec:
            name = str(spec["sql"].get("source", ""))
            if not name:
                return [("sql.source", "required: the name of a configured SQL source")]
            if name not in self.sql:
                return [("sql.source", f"no SQL source named {name!r} is configured on the server")]
        elif "file" in spec:
            path = str(spec["file"].get("path", ""))
            if path:
                try:
                    self.resolve_file(path, must_exist=False)
                except DataSourceError as exc:
                    return [("file.path", str(exc))]
        elif "entry_point" in spec:
            name = str(spec["entry_point"].get("name", ""))
            if not name:
                return [("entry_point.name", "required: the name of a registered entry point")]
            if name not in self.entry_points:
                return [("entry_point.name", f"no entry point named {name!r} is registered on the server")]
        return []

    # -- resolution (registration, and the worker right before it reads) ------------------------------

    def sql_source(self, name: str) -> SqlSourceConfig:
        if name not in self.sql:
            raise DataSourceError(f"no SQL source named {name!r} is configured on the server")
        return self.sql[name]

    def entry_point_target(self, name: str) -> str:
        """The `module:function` registered as `name`; checked before anything is imported."""
        if name not in self.entry_points:
            raise DataSourceError(f"no entry point named {name!r} is registered on the server")
        return self.entry_points[name]

    def resolve_file(self, path: str, *, must_exist: bool = True) -> pathlib.Path:
        """The real path of a file source inside a data root; DataSourceError otherwise.

        A relative path is looked up in each root in turn. Symlinks are resolved before the check,
        so a link inside a root that points out of it is refused like the path it points to. The
        message names only what the client sent, never where a path led or whether it exists
        outside the roots.
        """
        if not path or "\x00" in path:
            raise DataSourceError("file.path must be a non-empty path without NUL characters")
        given = pathlib.PurePath(path)
        if ".." in given.parts:
            raise DataSourceError(f"file.path {path!r} must not contain '..'")
        candidates = [pathlib.Path(given)] if given.is_absolute() else [root / given for root in self.file_roots]
        inside = [real for real in (pathlib.Path(os.path.realpath(c)) for c in candidates) if self._inside(real)]
        if not inside:
            raise DataSourceError(f"file.path {path!r} is not inside the server's data roots (--data-root)")
        for real in inside:
            if real.is_file():
                return real
        if must_exist:
            raise DataSourceError(f"file {path!r} does not exist in the server's data roots")
        return inside[0]

    def _inside(self, real: pathlib.Path) -> bool:
        return any(real != root and real.is_relative_to(root) for root in self.file_roots)

    def only_for(self, spec: dict) -> "DataSources":
        """The part of the configuration a job with this spec needs: what goes to its worker."""
        sql = {k: v for k, v in self.sql.items() if "sql" in spec and k == spec["sql"].get("source")}
        eps = {k: v for k, v in self.entry_points.items()
               if "entry_point" in spec and k == spec["entry_point"].get("name")}
        return replace(self, sql=sql, entry_points=eps)


def _read_file(path: pathlib.Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--data-sources {path}: {exc.strerror or exc}") from None
    try:
        raw = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        # The parser's message may quote a line of the file, which can hold a DSN's password.
        where = f" (line {exc.lineno})" if getattr(exc, "lineno", None) else ""
        raise ConfigError(f"--data-sources {path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'}"
                          f"{where}") from None
    if not isinstance(raw, dict) or set(raw) - _FILE_KEYS:
        raise ConfigError(f"--data-sources {path}: top-level keys are {', '.join(sorted(_FILE_KEYS))}")
    if not isinstance(raw.get("sql", {}), dict) or not isinstance(raw.get("entry_points", {}), dict) \
            or not isinstance(raw.get("file_roots", []), list):
        raise ConfigError(f"--data-sources {path}: sql and entry_points are tables, file_roots a list")
    return raw


def _sql_source(name: str, value: Any) -> SqlSourceConfig:
    where = f"--data-sources: sql source {name!r}"
    if not ENTRY_POINT_NAME.match(name):
        raise ConfigError(f"{where}: names are 1-64 characters of letters, digits, '_', '.', '-'")
    if not isinstance(value, dict) or set(value) - _SQL_KEYS:
        raise ConfigError(f"{where}: keys are {', '.join(sorted(_SQL_KEYS))}")
    dsn = value.get("dsn")
    if not isinstance(dsn, str) or not dsn.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"{where}: dsn must be a postgresql:// URL")
    row_limit = value.get("row_limit", DEFAULT_ROW_LIMIT)
    timeout = value.get("statement_timeout", DEFAULT_STATEMENT_TIMEOUT_S)
    if not isinstance(row_limit, int) or isinstance(row_limit, bool) or row_limit < 1:
        raise ConfigError(f"{where}: row_limit must be a whole number >= 1")
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 < timeout <= 86400:
        raise ConfigError(f"{where}: statement_timeout must be seconds in (0, 86400]")
    return SqlSourceConfig(name=name, dsn=dsn, row_limit=row_limit, statement_timeout_s=float(timeout))
