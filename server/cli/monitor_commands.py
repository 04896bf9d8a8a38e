"""The monitoring commands: `monitor report`, `monitor log` (through the client) and `models profile`.

`monitor report MODEL` prints the recent windows and, per feature, its verdict in the newest window and a
unicode sparkline of its drift effect over the recent windows (oldest left). `monitor log FILE` replays a
CSV or Parquet file of observations in columnar batches: a user's first step. `models profile MODEL`
builds a reference profile for a version trained before monitoring existed; it reads the version's data
source and artifact, so it runs where the server's data is, against its database (like `migrate`).
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import sys
from typing import TextIO

from closedloop import observation_batch
from closedloop.v1 import monitor_pb2

from .client_commands import CliError, _call, _client
from .render import as_json, enum_name, table, ts

SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values, top: float | None = None) -> str:
    """One block per value, scaled to `top` (default: the largest value; at least a tiny positive)."""
    values = list(values)
    if not values:
        return ""
    top = max(top or max(values), 1e-12)
    return "".join(SPARK[min(len(SPARK) - 1, max(0, int(v / top * (len(SPARK) - 1) + 0.5)))] for v in values)


def monitor_report(args: argparse.Namespace) -> int:
    with _client(args) as c:
        report = _call(c.drift_report, args.model_id, version=args.version, window_count=args.windows)
    if args.json:
        print(as_json(report))
        return 0
    render_drift_report(report, sys.stdout)
    return 0


def render_drift_report(report: monitor_pb2.DriftReport, out: TextIO) -> None:
    """The windows table, the newest drift window's features with their sparklines, the open windows."""
    print(f"{report.model_id}: current version {report.current_version}", file=out)
    kind = lambda w: enum_name(monitor_pb2.WindowKind, w.kind, "WINDOW_KIND_")  # noqa: E731
    table(["window", "version", "kind", "rows", "closed", "drift_score", "drifted", "performance", "alert"], [
        (w.sequence, w.version, kind(w), w.rows, ts(w.close_time),
         f"{w.drift_score:.3f}" if w.kind == monitor_pb2.WINDOW_KIND_OBSERVATIONS and w.judged else "-",
         f"{sum(f.drifted for f in w.features)}/{len(w.features)}" if w.features else "-",
         _performance(w), w.alert_id or (w.note if not w.judged else "-"))
        for w in report.windows], out)
    drift = [w for w in reversed(report.windows) if w.kind == monitor_pb2.WINDOW_KIND_OBSERVATIONS and w.judged]
    if drift:
        newest = {f.feature: f for f in drift[-1].features}
        history = {name: [next((f.effect for f in w.features if f.feature == name), 0.0) for w in drift]
                   for name in newest}
        top = max((v for h in history.values() for v in h), default=0.0)
        print(f"\nfeatures in window {drift[-1].sequence} (v{drift[-1].version}); drift over the last "
              f"{len(drift)} windows:", file=out)
        table(["feature", "method", "statistic", "p_value", "threshold", "drifted", "effect", "rows", "history"], [
            (f.feature, f.method, f"{f.statistic:.4f}", f"{f.p_value:.3g}" if f.HasField("p_value") else "-",
             f"{f.threshold:g}", "DRIFT" if f.drifted else "ok", f"{f.effect:.3f}", f.window_rows,
             sparkline(history[name], top))
            for name, f in sorted(newest.items(), key=lambda item: -item[1].effect)], out)
    for w in report.open_windows:
        print(f"open: window {w.sequence} of v{w.version} ({kind(w)}): {w.rows} rows since {ts(w.start_time)}",
              file=out)


def _performance(w: monitor_pb2.DriftWindow) -> str:
    if not w.HasField("performance"):
        return "-"
    p = w.performance
    return f"{p.metric} {p.value:.4g} vs {p.holdout_value:.4g} (drop {p.drop:+.1%})"


def monitor_log(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd  # the file reader; this command only

    path = pathlib.Path(args.file)
    try:
        frame = pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise CliError(f"{path}: {exc}") from None
    special = [c for c in (args.prediction_column, args.time_column) if c]
    missing = [c for c in special if c not in frame.columns]
    if missing:
        raise CliError(f"{path}: no column {', '.join(missing)} (columns: {', '.join(map(str, frame.columns))})")
    features = [c for c in frame.columns if c not in special]
    times = None
    if args.time_column:
        times = pd.to_datetime(frame[args.time_column], utc=True)

    def columns_of(part: pd.DataFrame) -> dict:
        return {str(c): (part[c].to_numpy(dtype=np.float64) if pd.api.types.is_numeric_dtype(part[c])
                         else [None if pd.isna(v) else str(v) for v in part[c]]) for c in features}

    def batches():
        for start in range(0, len(frame), args.batch_rows):
            part = frame.iloc[start:start + args.batch_rows]
            batch = observation_batch(args.model, columns_of(part), version=args.version,
                                      predictions=(part[args.prediction_column].to_numpy(dtype=np.float64)
                                                   if args.prediction_column else None))
            if times is not None:
                micros = times.iloc[start:start + args.batch_rows].astype("int64") // 1000
                batch.row_observe_time_micros.extend(micros.tolist())
            yield batch

    with _client(args) as c:
        summary = _call(c.log_observations, batches(), timeout=max(args.timeout, 600.0))
    print(as_json(summary) if args.json else
          f"sent {summary.rows} rows ({summary.values} values) in {summary.batches} batches to {args.model}")
    return 0


def models_profile(args: argparse.Namespace) -> int:
    from ..config import settings_from
    from ..db.pool import command_connection
    from ..executor.profiles import backfill_profile
    from ..executor.source_config import DataSources
    from ..store import monitoring as monitoring_store

    settings = settings_from(args)

    async def run() -> tuple[int, dict]:
        async with command_connection(settings.database_url, settings.data_dir, settings.connect_timeout) as conn:
            async with conn.transaction():
                version = await backfill_profile(conn, args.model_id, args.version or None,
                                                 DataSources.from_settings(settings))
            summary = await monitoring_store.profile_summary(conn, args.model_id, version)
        return version, summary["summary"]

    from ..errors import ClosedLoopError
    from ..executor.errors import PermanentJobError

    try:
        version, summary = asyncio.run(run())
    except ClosedLoopError as exc:
        raise CliError(exc.message) from None
    except PermanentJobError as exc:  # the data source or the training spec cannot give the window
        raise CliError(str(exc)) from None
    kinds = summary["features"]
    print(f"profiled {args.model_id} version {version}: {summary['rows']} rows, {len(kinds)} features "
          f"({sum(k == 'categorical' for k in kinds.values())} categorical), {summary['metric']} "
          f"{summary['holdout_metric']:.4g} on the holdout")
    return 0
