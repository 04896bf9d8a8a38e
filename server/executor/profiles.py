"""Reference profiles for versions trained before monitoring existed (`closedloop models profile`).

The trainer stores a profile with every version it trains (job_kinds.TrainingKind.record). For an
older version this rebuilds it the way the trainer would have: the training window of that version's
run reloaded from the model's data source, its artifact's predictions on it, and the holdout metric
recorded with the version. A data source that changed since (a SQL table that grew, a file replaced)
gives the profile of today's data for that window; the summary says the profile was backfilled.
"""

from __future__ import annotations

import asyncio

import asyncpg

from ..errors import FailedPrecondition, NotFound
from ..store import jobs as job_store
from ..store import versions as version_store
from . import artifacts
from .job_kinds import store_profile
from .source_config import DataSources


async def backfill_profile(conn: asyncpg.Connection, model_id: str, version: int | None = None,
                           sources: DataSources | None = None) -> int:
    """Build and store the profile of `version` (default: the current one); returns the version. The data
    is read through the operator's `sources`, as the trainer reads it."""
    spec = await job_store.load_model_spec(conn, model_id)
    if spec is None:
        raise NotFound(f"model {model_id!r} is not registered")
    version = version or spec.current_version
    if not version:
        raise FailedPrecondition(f"model {model_id!r} has no trained version yet")
    row = await version_store.get_version(conn, model_id, version)
    if row is None:
        raise NotFound(f"model {model_id!r} has no version {version}")
    from .trainer import profile_version  # the training stack, only in the process that builds

    data = await asyncio.to_thread(artifacts.read, row["artifact_path"], row["artifact_sha256"])
    profile = await asyncio.to_thread(profile_version, spec.training, version, data, row["artifact_sha256"],
                                      row["metric"], float(row["metric_value"]), sources)
    await store_profile(conn, model_id, version, profile, origin="backfill")
    return version
