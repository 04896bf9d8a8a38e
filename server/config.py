"""Settings: one frozen object, built once from flags and CLOSEDLOOP_* variables, validated, passed down.

Every option has a flag `--name` and a variable `CLOSEDLOOP_NAME` (dashes become underscores); a flag
beats the variable, the variable beats the default. Nothing reads the environment after this.
Every process builds its settings here: `closedloop serve` and `migrate` offer every flag, the
stand-alone worker process (executor/__main__.py) the subset it uses, with the same defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .errors import ConfigError

# Shared with executor/source_config.py, which reads the same pairs from the data-sources file.
ENTRY_POINT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
ENTRY_POINT_TARGET = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


def default_data_dir() -> pathlib.Path:
    import platformdirs

    return pathlib.Path(platformdirs.user_data_dir("closedloop"))


@dataclass(frozen=True)
class Settings:
    # Where the data lives: PostgreSQL URL (None: embedded PostgreSQL under data_dir/pg) and files.
    database_url: str | None = None
    data_dir: pathlib.Path = field(default_factory=default_data_dir)
    # gRPC endpoint; port 0 picks a free port (tests).
    listen: str = "127.0.0.1:50051"
    # Rule file or folder of *.rules; None: the bundled default rules (unless a set was applied).
    rules: pathlib.Path | None = None
    # Retraining backend: "local" process pool or "dask"; workers = processes (local) / slots.
    executor: str = "local"
    workers: int = 2
    dask_scheduler: str | None = None
    # Run the job workers in this process; off for ingest-only replicas.
    run_workers: bool = True
    # Prometheus-style text metrics over HTTP, e.g. 127.0.0.1:9464; None: off.
    metrics_listen: str | None = None
    # TLS: server certificate and key (PEM files); a client CA turns on mutual TLS.
    tls_cert: pathlib.Path | None = None
    tls_key: pathlib.Path | None = None
    tls_client_ca: pathlib.Path | None = None
    # Bearer tokens: a file of lines "sha256-hex-of-token role[,role] name".
    auth_tokens: pathlib.Path | None = None
    # Model-age sweep period in seconds (0: off).
    age_sweep_interval: float = 300.0
    # Queue: lease length, attempts, per-job timeout (seconds).
    job_lease: float = 30.0
    job_max_attempts: int = 3
    job_timeout: float = 3600.0
    # Limits.
    max_message_bytes: int = 4 * 1024 * 1024
    max_concurrent_rpcs: int = 1000
    # Logging: "auto" (console on a terminal, JSON otherwise), "json", "console"; level.
    log_format: str = "auto"
    log_level: str = "info"
    # Seconds to let in-flight RPCs finish on shutdown.
    shutdown_grace: float = 10.0
    # Connect retries at start-up before giving up (seconds in total).
    connect_timeout: float = 15.0
    # What a model's training spec may read (executor/source_config.py): a TOML or JSON file of named
    # SQL sources (and file roots, entry points); folders file sources must stay inside (repeatable;
    # none: <data-dir>/datasets); entry points as NAME=module:function (repeatable).
    data_sources: pathlib.Path | None = None
    data_root: tuple[pathlib.Path, ...] = ()
    entry_point: tuple[str, ...] = ()
    # Operations (issue 10): the longest any call waits on the database before answering UNAVAILABLE
    # (below the client's 10 s default deadline, so the client can retry); seconds of SIGTERM drain
    # (health NOT_SERVING while still answering) before the shutdown grace; serve bearer tokens or
    # metrics in clear text on a non-loopback address.
    db_timeout: float = 5.0
    drain: float = 5.0
    allow_insecure: bool = False

    def __post_init__(self) -> None:
        problems = []
        if self.executor not in ("local", "dask"):
            problems.append(f"--executor must be local or dask, not {self.executor!r}")
        if self.executor == "dask" and not self.dask_scheduler:
            problems.append("--executor dask needs --dask-scheduler (e.g. tcp://127.0.0.1:8786)")
        if self.workers < 0:
            problems.append("--workers must be >= 0")
        if ":" not in self.listen:
            problems.append(f"--listen must be host:port, not {self.listen!r}")
        if (self.tls_cert is None) != (self.tls_key is None):
            problems.append("--tls-cert and --tls-key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            problems.append("--tls-client-ca needs --tls-cert and --tls-key")
        if self.log_format not in ("auto", "json", "console"):
            problems.append("--log-format must be auto, json or console")
        for name in ("job_lease", "job_timeout", "shutdown_grace", "connect_timeout", "db_timeout"):
            if getattr(self, name) <= 0:
                problems.append(f"--{name.replace('_', '-')} must be > 0")
        if self.drain < 0:
            problems.append("--drain must be >= 0")
        if self.age_sweep_interval < 0:
            problems.append("--age-sweep-interval must be >= 0")
        if self.job_max_attempts < 1:
            problems.append("--job-max-attempts must be >= 1")
        for item in self.entry_point:
            name, _, target = item.partition("=")
            if not ENTRY_POINT_NAME.match(name) or not ENTRY_POINT_TARGET.match(target):
                problems.append(f"--entry-point must be NAME=package.module:function, not {item!r}")
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def auth_enabled(self) -> bool:
        return self.auth_tokens is not None


def _repeatable(f: dataclasses.Field) -> bool:
    return str(f.type).startswith("tuple")


def _convert(f: dataclasses.Field, raw: str | list[str]) -> Any:
    """A flag's or variable's text as the field's type. Repeatable fields take a list (the flag given
    several times) or a comma-separated variable."""
    kind = str(f.type)
    if _repeatable(f):
        items = raw if isinstance(raw, list) else [part.strip() for part in raw.split(",") if part.strip()]
        if "pathlib.Path" in kind:
            return tuple(pathlib.Path(item).expanduser() for item in items)
        return tuple(items)
    try:
        if "bool" in kind:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if "pathlib.Path" in kind:
            return pathlib.Path(raw).expanduser()
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
    except ValueError:
        raise ConfigError(f"--{f.name.replace('_', '-')}: cannot read {raw!r} as {kind}") from None
    return raw


def add_arguments(parser: argparse.ArgumentParser, only: Iterable[str] | None = None) -> None:
    """One flag per Settings field (or per field named in `only`); defaults are None so we can tell
    'not given' apart."""
    fields = dataclasses.fields(Settings)
    if only is not None:
        wanted = set(only)
        unknown = wanted - {f.name for f in fields}
        if unknown:
            raise ValueError(f"not Settings fields: {sorted(unknown)}")
        fields = tuple(f for f in fields if f.name in wanted)
    for f in fields:
        flag = "--" + f.name.replace("_", "-")
        if "bool" in str(f.type):
            parser.add_argument(flag, dest=f.name, default=None, action=argparse.BooleanOptionalAction)
        elif _repeatable(f):
            parser.add_argument(flag, dest=f.name, default=None, action="append", metavar=f.name.upper())
        else:
            parser.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper())


def settings_from(args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None,
                  **overrides: Any) -> Settings:
    """Flags, then CLOSEDLOOP_* variables, then defaults; `overrides` beat both (for tests)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        given = getattr(args, f.name, None) if args is not None else None
        if given is not None:
            values[f.name] = given if isinstance(given, bool) else _convert(
                f, given if isinstance(given, list) else str(given))
            continue
        raw = environ.get("CLOSEDLOOP_" + f.name.upper())
        if raw not in (None, ""):
            values[f.name] = _convert(f, raw)
    values.update(overrides)
    return Settings(**values)
