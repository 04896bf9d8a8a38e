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
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .errors import ConfigError


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
    # The HTTP side (http/): /metrics, /healthz, /readyz, the Alertmanager receiver and JSON alerts,
    # e.g. 127.0.0.1:9464; None: off. Same auth as gRPC; without auth only a loopback address.
    http_listen: str | None = None
    # Deprecated alias of http_listen (before the HTTP side it served only /metrics); kept so that
    # existing deployments keep their scrape address. See `http_address`.
    metrics_listen: str | None = None
    # Alertmanager receiver mapping (README "Connecting Prometheus, Alertmanager and your pager"):
    # the label naming the model, the label naming the alert type (absent: the alertname in
    # snake_case), the label carrying the severity (absent: medium), the annotation carrying the
    # number, and the label naming the metric that number is (absent: "<type>_score").
    alertmanager_model_label: str = "model_id"
    alertmanager_type_label: str = "type"
    alertmanager_severity_label: str = "severity"
    alertmanager_value_annotation: str = "value"
    alertmanager_metric_label: str = "metric"
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
        for name in ("http_listen", "metrics_listen"):
            value = getattr(self, name)
            if value is not None and ":" not in value:
                problems.append(f"--{name.replace('_', '-')} must be host:port, not {value!r}")
        if self.http_listen and self.metrics_listen and self.http_listen != self.metrics_listen:
            problems.append("--metrics-listen is the old name of --http-listen: give one of them")
        if (self.tls_cert is None) != (self.tls_key is None):
            problems.append("--tls-cert and --tls-key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            problems.append("--tls-client-ca needs --tls-cert and --tls-key")
        if self.log_format not in ("auto", "json", "console"):
            problems.append("--log-format must be auto, json or console")
        for name in ("job_lease", "job_timeout", "shutdown_grace", "connect_timeout"):
            if getattr(self, name) <= 0:
                problems.append(f"--{name.replace('_', '-')} must be > 0")
        if self.age_sweep_interval < 0:
            problems.append("--age-sweep-interval must be >= 0")
        if self.job_max_attempts < 1:
            problems.append("--job-max-attempts must be >= 1")
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def auth_enabled(self) -> bool:
        return self.auth_tokens is not None

    @property
    def http_address(self) -> str | None:
        """Where the HTTP side listens: --http-listen, or the deprecated --metrics-listen; None: off."""
        return self.http_listen or self.metrics_listen


def _convert(f: dataclasses.Field, raw: str) -> Any:
    kind = str(f.type)
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
            values[f.name] = given if isinstance(given, bool) else _convert(f, str(given))
            continue
        raw = environ.get("CLOSEDLOOP_" + f.name.upper())
        if raw not in (None, ""):
            values[f.name] = _convert(f, raw)
    values.update(overrides)
    return Settings(**values)
