"""A TrainingSpec (protobuf JSON dict) as the executor reads it: the check RegisterModel runs, and the
helpers the trainer and the data sources share (estimator resolution, source kind, JSON numbers).

Importing this module loads no numpy, pandas or scikit-learn: RegisterModel runs on servers that
never train. Only the estimator part of the check needs scikit-learn (does the class exist, does it
take these params, is it a classifier or a regressor); check_spec runs that part in a helper
process of its own, so the training stack stays out of the server process, and awaits it, so the
server's event loop keeps serving while the helper starts (about 2 s the first time).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import math
import multiprocessing
import re
import threading
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any

from . import scoring
from .errors import PermanentJobError

if TYPE_CHECKING:
    from .source_config import DataSources

DEFAULT_HOLDOUT = 0.2
SOURCE_KINDS = ("sql", "file", "entry_point", "synthetic")
# The target columns the synthetic source generates; its specs may only name these (or none).
SYNTHETIC_TARGETS = ("direction", "next_return")
_MODULE_PART = re.compile(r"^[a-z][a-z0-9_]*$")
_CLASS_NAME = re.compile(r"^[A-Z][A-Za-z0-9]*$")
# The first check pays for starting the process and importing scikit-learn (about a second).
ESTIMATOR_CHECK_TIMEOUT_S = 120.0


class SpecError(PermanentJobError):
    """The training spec cannot work as written (estimator, params, columns, metric)."""


def source_kind(spec: dict) -> str | None:
    for kind in SOURCE_KINDS:
        if kind in spec:
            return kind
    return None


def time_column_of(spec: dict) -> str:
    if spec.get("time_column"):
        return spec["time_column"]
    return "time" if source_kind(spec) == "synthetic" else ""


def synthetic_target(metric: str) -> str:
    """The synthetic source's target for a spec that names none: the one the metric can score."""
    known = scoring.METRICS.get(metric)
    return "next_return" if known is not None and known.task == "regression" else "direction"


def normalize_numbers(value: Any) -> Any:
    """JSON from a protobuf Struct has only floats: make integral ones ints, recursively.

    Estimator params like n_estimators=100 arrive as 100.0, which scikit-learn rejects.
    """
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: normalize_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize_numbers(v) for v in value]
    return value


def resolve_estimator(name: str) -> type:
    """The estimator class for "module.Class" (or "sklearn.module.Class") inside scikit-learn only."""
    from sklearn.base import BaseEstimator

    bare = name[len("sklearn."):] if name.startswith("sklearn.") else name
    module_path, _, class_name = bare.rpartition(".")
    parts = module_path.split(".") if module_path else []
    if not parts or not all(_MODULE_PART.match(p) for p in parts) or not _CLASS_NAME.match(class_name):
        raise SpecError(f"estimator must name a scikit-learn class like linear_model.SGDClassifier, not {name!r}")
    try:
        module = importlib.import_module("sklearn." + module_path)
    except ImportError:
        raise SpecError(f"estimator {name!r}: scikit-learn has no module {module_path!r}") from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseEstimator)):
        raise SpecError(f"estimator {name!r} is not a scikit-learn estimator class")
    return cls


def build_estimator(name: str, params: dict | None) -> Any:
    from sklearn.base import is_classifier, is_regressor

    cls = resolve_estimator(name)
    try:
        est = cls(**normalize_numbers(params or {}))
    except TypeError as exc:
        raise SpecError(f"estimator {name} params: {exc}") from None
    if not (is_classifier(est) or is_regressor(est)):
        raise SpecError(f"estimator {name} is neither a classifier nor a regressor")
    return est


def estimator_problems(name: str, params: dict | None, metric: str) -> list[tuple[str, str]]:
    """The estimator part of check_spec, which imports scikit-learn (run in the helper process)."""
    from sklearn.base import is_classifier

    try:
        est = build_estimator(name, params)
    except SpecError as exc:
        return [("params" if "params" in str(exc) else "estimator", str(exc))]
    task = "classification" if is_classifier(est) else "regression"
    if metric in scoring.METRICS and scoring.METRICS[metric].task != task:
        return [("metric", f"{metric} is a {scoring.METRICS[metric].task} metric; {name} is a {task} estimator")]
    return []


_checker: concurrent.futures.ProcessPoolExecutor | None = None
_checker_lock = threading.Lock()


def _estimator_checker() -> concurrent.futures.ProcessPoolExecutor:
    """One process, started on first use, that keeps scikit-learn loaded for later checks.

    spawn rather than fork (forking a process with gRPC's threads is unsafe) or forkserver (the
    executor's LocalBackend owns the process's one forkserver and its preload list).
    """
    global _checker
    with _checker_lock:
        if _checker is None:
            _checker = concurrent.futures.ProcessPoolExecutor(max_workers=1,
                                                              mp_context=multiprocessing.get_context("spawn"))
        return _checker


async def _checked_estimator(name: str, params: dict | None, metric: str) -> list[tuple[str, str]]:
    global _checker
    try:
        return await _in_checker(name, params, metric)
    except BrokenProcessPool:
        # The helper died (killed, out of memory): start a fresh one next time, and check this
        # spec in a fresh one now rather than refusing a spec that may be fine.
        with _checker_lock:
            _checker = None
        return await _in_checker(name, params, metric)


async def _in_checker(name: str, params: dict | None, metric: str) -> list[tuple[str, str]]:
    # Starting the pool's process happens in submit: off the event loop too.
    future = await asyncio.to_thread(lambda: _estimator_checker().submit(estimator_problems, name, params, metric))
    return await asyncio.wait_for(asyncio.wrap_future(future), ESTIMATOR_CHECK_TIMEOUT_S)


async def check_spec(spec: dict, sources: "DataSources") -> list[tuple[str, str]]:
    """Problems of a TrainingSpec (protobuf JSON) as (field, description); for RegisterModel.

    Side-effect free: resolves the estimator and builds it (in the helper process), checks the source
    against the operator's configuration `sources`, but loads no data and imports no entry point.
    """
    problems: list[tuple[str, str]] = []
    metric = spec.get("metric", "")
    if not spec.get("estimator"):
        problems.append(("estimator", "required"))
    else:
        problems += await _checked_estimator(spec["estimator"], spec.get("params"), metric)
    if metric not in scoring.METRICS:
        problems.append(("metric", f"must be one of {', '.join(scoring.METRICS)}"))
    kind = source_kind(spec)
    target = spec.get("target", "")
    if kind == "synthetic":
        if target and target not in SYNTHETIC_TARGETS:
            problems.append(("target", f"the synthetic source has the targets {' and '.join(SYNTHETIC_TARGETS)} "
                                       f"(empty: chosen by the metric), not {target!r}"))
    elif not target:
        problems.append(("target", "required"))
    holdout = float(spec.get("holdout_fraction", 0) or 0)
    if not (holdout == 0 or 0 < holdout <= 0.9) or math.isnan(holdout):
        problems.append(("holdout_fraction", f"must be in (0, 0.9] (0: default {DEFAULT_HOLDOUT:g})"))
    margin = float(spec.get("promotion_margin", 0) or 0)
    if margin < 0 or math.isnan(margin) or math.isinf(margin):
        problems.append(("promotion_margin", "must be a finite number >= 0"))
    if kind is None:
        problems.append(("source", "one of sql, file, entry_point, synthetic is required"))
    elif kind == "sql" and not str(spec["sql"].get("query", "")).strip():
        problems.append(("sql.query", "required"))
    elif kind == "file":
        path = str(spec["file"].get("path", ""))
        fmt = str(spec["file"].get("format", "") or path.rpartition(".")[2]).lower()
        if not path:
            problems.append(("file.path", "required"))
        if fmt not in ("csv", "parquet", "pq", "txt"):
            problems.append(("file.format", "must be csv or parquet (or inferable from the extension)"))
    elif kind == "synthetic":
        syn = spec["synthetic"]
        if not 0 <= float(syn.get("drift", 0) or 0) <= 1:
            problems.append(("synthetic.drift", "must be in [0, 1]"))
        if not 0 <= int(syn.get("rows", 0) or 0) <= 1_000_000:
            problems.append(("synthetic.rows", "must be in 0..1000000 (0: default 4000)"))
    return problems + sources.problems(spec)
