"""Settings: one frozen object, built once from flags and CLOSEDLOOP_* variables, validated, passed down.

Every option has a flag `--name` and a variable `CLOSEDLOOP_NAME` (dashes become underscores); a flag
beats the variable, the variable beats the default. Nothing reads the environment after this.
What does not fit a flag lives in the TOML file named by `--config` (NotifySettings: notification
targets and the loop's own notifications), read and validated while Settings is built.
Every process builds its settings here: `closedloop serve` and `migrate` offer every flag, the
stand-alone worker process (executor/__main__.py) the subset it uses, with the same defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
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


# --- the configuration file ---------------------------------------------------------------------
#
#   [notify]
#   on_retrain_failed = "slack_quants"     # the loop's own outcomes, each naming a target
#   on_not_promoted = "slack_quants"
#   on_rollback = "pagerduty_fx"
#
#   [notify.targets.pagerduty_fx]
#   kind = "pagerduty"                     # webhook | slack | pagerduty
#   secret_env = "PD_ROUTING_KEY"          # or secret = "..."; pagerduty: the routing key
#   max_attempts = 8                       # then the notification is dead-lettered
#
# Secrets (a webhook's HMAC key, a PagerDuty routing key, a Slack URL, which carries its token)
# are kept out of repr() so that no log line or error message can print them.

TARGET_KINDS = ("webhook", "slack", "pagerduty")
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
OUTCOME_EVENTS = ("on_retrain_failed", "on_not_promoted", "on_rollback")


@dataclass(frozen=True)
class NotifyTarget:
    """Where and how one named target is reached, and how hard delivery tries."""

    name: str
    kind: str
    url: str = field(repr=False)
    secret: str = field(default="", repr=False)
    max_attempts: int = 8
    backoff_initial: float = 2.0  # seconds before the second attempt; doubles per attempt
    backoff_max: float = 600.0
    timeout: float = 10.0  # seconds per request


@dataclass(frozen=True)
class NotifySettings:
    targets: Mapping[str, NotifyTarget] = field(default_factory=dict)
    on_retrain_failed: str | None = None
    on_not_promoted: str | None = None
    on_rollback: str | None = None
    poll_interval: float = 1.0  # seconds between looks for due notifications when idle

    @property
    def target_names(self) -> frozenset[str]:
        return frozenset(self.targets)


_TARGET_KEYS = {"kind", "url", "secret", "secret_env", "url_env", "max_attempts", "backoff_initial",
                "backoff_max", "timeout"}
_NOTIFY_KEYS = {"targets", "poll_interval", *OUTCOME_EVENTS}


def _unknown_keys(where: str, table: Mapping, allowed: set[str], problems: list[str]) -> None:
    import difflib

    for key in sorted(set(table) - allowed):
        close = difflib.get_close_matches(key, sorted(allowed), n=1)
        problems.append(f"{where}.{key}: unknown key" + (f"; did you mean '{close[0]}'?" if close else ""))


def _number(where: str, value: Any, problems: list[str], *, integer: bool = False):
    """A positive number (an integer >= 1 when `integer`), or None with the problem noted."""
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or value <= 0:
        problems.append(f"{where} must be " + ("an integer >= 1" if integer else "a number > 0"))
        return None
    return value


def _target(name: str, table: Any, environ: Mapping[str, str], problems: list[str]) -> NotifyTarget | None:
    where = f"notify.targets.{name}"
    if not isinstance(table, dict):
        problems.append(f"{where} must be a table")
        return None
    _unknown_keys(where, table, _TARGET_KEYS, problems)
    kind = table.get("kind")
    if kind not in TARGET_KINDS:
        problems.append(f"{where}.kind must be one of {', '.join(TARGET_KINDS)}")
        return None
    values: dict[str, Any] = {}
    for key in ("url", "secret"):
        if key in table and f"{key}_env" in table:
            problems.append(f"{where}: give {key} or {key}_env, not both")
        elif f"{key}_env" in table:
            variable = table[f"{key}_env"]
            if not environ.get(variable):
                problems.append(f"{where}.{key}_env: the variable {variable} is not set")
            else:
                values[key] = environ[variable]
        elif key in table:
            if not isinstance(table[key], str) or not table[key]:
                problems.append(f"{where}.{key} must be a non-empty string")
            else:
                values[key] = table[key]
    if kind == "pagerduty":
        values.setdefault("url", PAGERDUTY_EVENTS_URL)
    if "url" not in table and "url_env" not in table and "url" not in values:
        problems.append(f"{where}: a {kind} target needs url (or url_env)")
    elif "url" in values and not values["url"].startswith(("http://", "https://")):
        problems.append(f"{where}.url must start with http:// or https://")  # the value may be secret
    if kind in ("webhook", "pagerduty") and "secret" not in table and "secret_env" not in table:
        what = "the shared HMAC key" if kind == "webhook" else "the routing key"
        problems.append(f"{where}: a {kind} target needs secret or secret_env ({what})")
    for key, integer in (("max_attempts", True), ("backoff_initial", False), ("backoff_max", False),
                         ("timeout", False)):
        if key in table:
            value = _number(f"{where}.{key}", table[key], problems, integer=integer)
            if value is not None:
                values[key] = value
    if any(p.startswith(where) for p in problems):
        return None
    return NotifyTarget(name=name, kind=kind, **values)


def notify_settings(document: Mapping, environ: Mapping[str, str]) -> NotifySettings:
    """The [notify] part of a parsed configuration file; ConfigError lists every problem."""
    problems: list[str] = []
    notify = document.get("notify", {})
    if not isinstance(notify, dict):
        raise ConfigError("notify must be a table")
    _unknown_keys("notify", notify, _NOTIFY_KEYS, problems)
    tables = notify.get("targets", {})
    targets = {}
    for name, table in (tables.items() if isinstance(tables, dict) else ()):
        if not name.isidentifier():
            problems.append(f"notify.targets.{name}: a target name is a rule-language name (letters, digits, _)")
            continue
        target = _target(name, table, environ, problems)
        if target is not None:
            targets[name] = target
    values: dict[str, Any] = {}
    for key in OUTCOME_EVENTS:
        if key in notify:
            if notify[key] not in targets:
                problems.append(f"notify.{key}: {notify[key]!r} is not a configured target")
            values[key] = notify[key]
    if "poll_interval" in notify:
        values["poll_interval"] = _number("notify.poll_interval", notify["poll_interval"], problems)
    if problems:
        raise ConfigError("; ".join(problems))
    return NotifySettings(targets=targets, **values)


def load_config_file(path: pathlib.Path, environ: Mapping[str, str] | None = None) -> NotifySettings:
    import tomllib

    try:
        document = tomllib.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"--config {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path}: not valid TOML: {exc}") from None
    unknown = sorted(set(document) - {"notify"})
    if unknown:
        raise ConfigError(f"--config {path}: unknown section(s) {', '.join(unknown)} (known: notify)")
    try:
        return notify_settings(document, os.environ if environ is None else environ)
    except ConfigError as exc:
        raise ConfigError(f"--config {path}: {exc}") from None


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
    # How long alerts and their actions are kept: a duration such as 180d, 26w, 4320h, or "off" (keep
    # everything, the default: dropping data is the operator's decision). Whole months are dropped
    # (store/partitions.py); feedback is kept.
    retention: str = "off"
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
    # TOML configuration file: [notify] and [notify.targets.NAME] sections (NotifySettings).
    config: pathlib.Path | None = None
    # Read from --config, not a flag of its own; tests may pass it directly.
    notify: NotifySettings = field(default_factory=NotifySettings, metadata={"flag": False})

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
        for name in ("job_lease", "job_timeout", "shutdown_grace", "connect_timeout", "db_timeout"):
            if getattr(self, name) <= 0:
                problems.append(f"--{name.replace('_', '-')} must be > 0")
        if self.drain < 0:
            problems.append("--drain must be >= 0")
        if self.age_sweep_interval < 0:
            problems.append("--age-sweep-interval must be >= 0")
        try:
            self.retention_period  # noqa: B018 - validated here, read where it is used
        except ValueError as exc:
            problems.append(f"--retention {exc}")
        if self.job_max_attempts < 1:
            problems.append("--job-max-attempts must be >= 1")
        for item in self.entry_point:
            name, _, target = item.partition("=")
            if not ENTRY_POINT_NAME.match(name) or not ENTRY_POINT_TARGET.match(target):
                problems.append(f"--entry-point must be NAME=package.module:function, not {item!r}")
        if problems:
            raise ConfigError("; ".join(problems))
        if self.config is not None and self.notify == NotifySettings():
            object.__setattr__(self, "notify", load_config_file(self.config))

    @property
    def retention_period(self) -> dt.timedelta | None:
        """--retention as a duration; None when off."""
        return parse_retention(self.retention)

    @property
    def auth_enabled(self) -> bool:
        return self.auth_tokens is not None

    @property
    def http_address(self) -> str | None:
        """Where the HTTP side listens: --http-listen, or the deprecated --metrics-listen; None: off."""
        return self.http_listen or self.metrics_listen


RETENTION_UNITS = {"h": 3600, "d": 86400, "w": 7 * 86400}
# Below a day, retention would drop the month being written; months are the unit anyway.
MIN_RETENTION = dt.timedelta(days=1)


def parse_retention(text: str) -> dt.timedelta | None:
    """'off' -> None; '<n>h', '<n>d', '<n>w' -> that duration (at least a day)."""
    if text.strip().lower() == "off":
        return None
    match = re.fullmatch(r"\s*(\d+)\s*([hdw])\s*", text.lower())
    if not match:
        raise ValueError(f"must be off or a duration such as 180d, 26w or 4320h, not {text!r}")
    period = dt.timedelta(seconds=int(match.group(1)) * RETENTION_UNITS[match.group(2)])
    if period < MIN_RETENTION:
        raise ValueError(f"must be at least a day, not {text!r}")
    return period


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


def _flag_fields() -> tuple[dataclasses.Field, ...]:
    return tuple(f for f in dataclasses.fields(Settings) if f.metadata.get("flag", True))


def add_arguments(parser: argparse.ArgumentParser, only: Iterable[str] | None = None) -> None:
    """One flag per Settings field (or per field named in `only`); defaults are None so we can tell
    'not given' apart."""
    fields = _flag_fields()
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
    for f in _flag_fields():
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
