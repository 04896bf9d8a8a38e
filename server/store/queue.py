"""The retrain_jobs queue: every SQL statement that moves a job, as named async functions.

The executor's runner (executor/runner.py) and the API call these; this module holds the SQL and the
state machine, the runner holds the loops (claim, heartbeat, rescue) that drive it.

State machine (one row per job):

    QUEUED --claim--> RUNNING --complete--> SUCCEEDED
       ^                 |-- fail (last attempt) / rescue (last attempt) --> FAILED
       |                 |-- cancel --> CANCELLED
       +-- fail / rescue / release (shutdown) --+

- A claim stamps a fresh `lease_token`; every later write of the attempt (progress, heartbeat,
  completion, failure) is fenced by `id AND lease_token AND state = 'RUNNING'`, so a worker that
  lost its lease (paused, partitioned, killed and rescued) changes nothing when it wakes up.
- `attempt` counts claims, so a rescue after a lost worker counts as an attempt too.
- One active (QUEUED/RUNNING) job per model is a unique partial index; enqueue coalesces into it with
  INSERT … ON CONFLICT, so concurrent writers on any number of replicas never create a second one.
- NOTIFY on JOBS_CHANNEL wakes idle workers; NOTIFY on CANCEL_CHANNEL reaches the worker that runs a
  job being cancelled. Inside a transaction both are delivered at commit.
"""

from __future__ import annotations

from typing import Sequence

import asyncpg

from .models import like_patterns

JOBS_CHANNEL = "closedloop_retrain_jobs"
CANCEL_CHANNEL = "closedloop_retrain_cancel"

MODES = ("FULL", "INCREMENTAL")
TERMINAL_STATES = ("SUCCEEDED", "FAILED", "CANCELLED")

# A terminal transition clears the lease so nothing can fence-match the row again.
_END_LEASE = "lease_token = NULL, lease_expires = NULL"


async def enqueue(conn: asyncpg.Connection, *, model_id: str, mode: str, priority: int, reason: str = "",
                  trigger_alert_id: int | None = None, trigger_rule: str | None = None, manual: bool = False,
                  request_id: str | None = None, max_attempts: int | None = None,
                  timeout_s: float | None = None) -> tuple[asyncpg.Record, bool]:
    """Queue a job for the model, or coalesce into its active one. Returns (job, created).

    Runs in the caller's transaction. Coalescing raises the priority to the maximum, turns a still
    QUEUED incremental job into a full one when asked for full, and counts the trigger. The same
    request_id always resolves to the same job (the first request claims the key; a concurrent
    duplicate waits on that row lock and then reads the job it resolved to).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    if not 1 <= priority <= 4:
        raise ValueError(f"priority must be 1..4, not {priority}")
    if request_id:
        claimed = await conn.fetchval(
            """INSERT INTO retrain_job_requests (request_id) VALUES ($1)
               ON CONFLICT (request_id) DO NOTHING RETURNING request_id""",
            request_id,
        )
        if claimed is None:
            job = await conn.fetchrow(
                """SELECT j.* FROM retrain_job_requests r JOIN retrain_jobs j ON j.id = r.job_id
                    WHERE r.request_id = $1""",
                request_id,
            )
            if job is not None:
                return job, False
            # The key exists without a job only inside the transaction that claimed it, which
            # cannot be ours here: fall through and enqueue normally.
    row = await conn.fetchrow(
        """INSERT INTO retrain_jobs AS j
                (model_id, mode, priority, reason, trigger_alert_id, trigger_rule, manual, request_id,
                 max_attempts, timeout_s)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, coalesce($9, 3), $10)
           ON CONFLICT (model_id) WHERE state IN ('QUEUED', 'RUNNING') DO UPDATE SET
                priority = greatest(j.priority, EXCLUDED.priority),
                mode = CASE WHEN j.state = 'QUEUED' AND EXCLUDED.mode = 'FULL' THEN 'FULL' ELSE j.mode END,
                coalesced_triggers = j.coalesced_triggers + 1,
                update_time = now()
           RETURNING j.*, (xmax = 0) AS created""",
        model_id, mode, priority, reason, trigger_alert_id, trigger_rule, manual, request_id,
        max_attempts, timeout_s,
    )
    if request_id:
        await conn.execute("UPDATE retrain_job_requests SET job_id = $2 WHERE request_id = $1",
                           request_id, row["id"])
    if row["state"] == "QUEUED":
        await conn.execute("SELECT pg_notify($1, $2)", JOBS_CHANNEL, str(row["id"]))
    return row, bool(row["created"])


async def claim(conn: asyncpg.Connection, *, worker: str, lease_s: float, limit: int = 1) -> list[asyncpg.Record]:
    """Claim up to `limit` runnable jobs, critical first, then oldest. Never blocks on other claimers."""
    rows = await conn.fetch(
        """UPDATE retrain_jobs j SET
                state = 'RUNNING', attempt = j.attempt + 1, lease_token = gen_random_uuid(),
                lease_expires = now() + make_interval(secs => $2), worker = $1,
                start_time = coalesce(j.start_time, now()), update_time = now(),
                progress = 0, progress_message = 'claimed', executor_pid = NULL, executor_host = NULL
            FROM (SELECT id FROM retrain_jobs
                   WHERE state = 'QUEUED' AND run_after <= now()
                   ORDER BY priority DESC, id
                   LIMIT $3
                   FOR UPDATE SKIP LOCKED) picked
           WHERE j.id = picked.id
           RETURNING j.*""",
        worker, lease_s, limit,
    )
    return sorted(rows, key=lambda r: (-r["priority"], r["id"]))


async def heartbeat(conn: asyncpg.Connection, leases: Sequence[tuple[int, str]],
                    lease_s: float) -> dict[int, bool]:
    """Renew the leases still held; {job_id: cancel_requested} for those. Missing ids were lost."""
    if not leases:
        return {}
    rows = await conn.fetch(
        """UPDATE retrain_jobs j SET lease_expires = now() + make_interval(secs => $3)
             FROM unnest($1::bigint[], $2::uuid[]) AS held(id, token)
            WHERE j.id = held.id AND j.lease_token = held.token AND j.state = 'RUNNING'
        RETURNING j.id, j.cancel_requested""",
        [i for i, _ in leases], [t for _, t in leases], lease_s,
    )
    return {r["id"]: r["cancel_requested"] for r in rows}


async def report_progress(conn: asyncpg.Connection, job_id: int, token: str, progress: float, message: str,
                          pid: int | None = None, host: str | None = None) -> bool:
    """Progress of the attempt holding `token`; False when it no longer holds the job (or cancel)."""
    owned = await conn.fetchval(
        """UPDATE retrain_jobs SET progress = $3, progress_message = $4,
                  executor_pid = coalesce($5, executor_pid), executor_host = coalesce($6, executor_host),
                  update_time = now()
            WHERE id = $1 AND lease_token = $2 AND state = 'RUNNING' AND NOT cancel_requested
        RETURNING id""",
        job_id, token, progress, message, pid, host,
    )
    return owned is not None


async def lock_owned(conn: asyncpg.Connection, job_id: int, token: str) -> asyncpg.Record | None:
    """Lock the job for a completion by the attempt holding `token`; None when it lost the lease."""
    return await conn.fetchrow(
        """SELECT * FROM retrain_jobs
            WHERE id = $1 AND lease_token = $2 AND state = 'RUNNING' FOR UPDATE""",
        job_id, token,
    )


async def complete(conn: asyncpg.Connection, job_id: int, token: str, *, metric: str | None = None,
                   champion_metric: float | None = None, challenger_metric: float | None = None,
                   improvement: float | None = None, promoted: bool = False, new_version: int = 0,
                   refit_fallback: bool = False, message: str = "done") -> asyncpg.Record | None:
    """SUCCEEDED with the attempt's results; None (nothing written) when the lease was lost.

    `improvement` is the trainer's (challenger minus champion, signed so that positive is better),
    stored as computed so every reader sees the same figure.
    """
    return await conn.fetchrow(
        f"""UPDATE retrain_jobs SET state = 'SUCCEEDED', {_END_LEASE}, end_time = now(), update_time = now(),
                   progress = 1, progress_message = $9, metric = $3, champion_metric = $4,
                   challenger_metric = $5, promoted = $6, new_version = $7, refit_fallback = $8, error = '',
                   improvement = $10
             WHERE id = $1 AND lease_token = $2 AND state = 'RUNNING'
         RETURNING *""",
        job_id, token, metric, champion_metric, challenger_metric, promoted, new_version, refit_fallback, message,
        improvement,
    )


async def fail(conn: asyncpg.Connection, job_id: int, token: str, error: str, *, retry_base_s: float,
               retry_cap_s: float, retryable: bool = True) -> asyncpg.Record | None:
    """End a failed attempt: back to QUEUED after a backoff, or FAILED after the last attempt.

    Backoff is exponential with "equal jitter": the n-th retry waits between d/2 and d where
    d = min(cap, base * 2^(n-1)); the lower bound of one gap is the upper bound of the one before,
    so gaps never shrink while the jitter still spreads a burst of failures apart.
    Returns the row (its `run_after - now()` is the delay) or None when the lease was lost.
    """
    return await conn.fetchrow(
        f"""UPDATE retrain_jobs SET
                state = CASE WHEN $6 AND attempt < max_attempts THEN 'QUEUED' ELSE 'FAILED' END,
                run_after = now() + make_interval(secs =>
                    least($5, $4 * power(2, attempt - 1)) * (0.5 + 0.5 * random())),
                end_time = CASE WHEN $6 AND attempt < max_attempts THEN NULL ELSE now() END,
                {_END_LEASE}, error = $3, update_time = now(),
                progress_message = CASE WHEN $6 AND attempt < max_attempts THEN 'waiting to retry'
                                        ELSE 'failed' END
             WHERE id = $1 AND lease_token = $2 AND state = 'RUNNING'
         RETURNING *, extract(epoch FROM run_after - now())::float8 AS retry_in_s""",
        job_id, token, error[:8000], retry_base_s, retry_cap_s, retryable,
    )


async def release(conn: asyncpg.Connection, job_id: int, token: str) -> asyncpg.Record | None:
    """Give a claimed job back untouched (graceful shutdown): the attempt does not count."""
    row = await conn.fetchrow(
        f"""UPDATE retrain_jobs SET state = 'QUEUED', {_END_LEASE}, attempt = greatest(attempt - 1, 0),
                   worker = NULL, run_after = now(), progress = 0, progress_message = 'returned to the queue',
                   update_time = now()
             WHERE id = $1 AND lease_token = $2 AND state = 'RUNNING'
         RETURNING *""",
        job_id, token,
    )
    if row is not None:
        await conn.execute("SELECT pg_notify($1, $2)", JOBS_CHANNEL, str(job_id))
    return row


async def finish_cancelled(conn: asyncpg.Connection, job_id: int, token: str) -> asyncpg.Record | None:
    """The worker stopped a running job whose cancellation was requested."""
    return await conn.fetchrow(
        f"""UPDATE retrain_jobs SET state = 'CANCELLED', {_END_LEASE}, end_time = now(), update_time = now(),
                   progress_message = 'cancelled'
             WHERE id = $1 AND lease_token = $2 AND state = 'RUNNING'
         RETURNING *""",
        job_id, token,
    )


async def request_cancel(conn: asyncpg.Connection, job_id: int) -> asyncpg.Record | None:
    """Cancel: a QUEUED job ends at once; a RUNNING one is flagged and its worker told by NOTIFY.

    None when the job does not exist or has already ended (the caller tells which).
    """
    row = await conn.fetchrow(
        """UPDATE retrain_jobs SET
                cancel_requested = true, update_time = now(),
                state = CASE WHEN state = 'QUEUED' THEN 'CANCELLED' ELSE state END,
                end_time = CASE WHEN state = 'QUEUED' THEN now() ELSE end_time END,
                progress_message = CASE WHEN state = 'QUEUED' THEN 'cancelled' ELSE 'cancelling' END
             WHERE id = $1 AND state IN ('QUEUED', 'RUNNING')
         RETURNING *""",
        job_id,
    )
    if row is not None and row["state"] == "RUNNING":
        await conn.execute("SELECT pg_notify($1, $2)", CANCEL_CHANNEL, str(job_id))
    return row


async def rescue_expired(conn: asyncpg.Connection, *, limit: int = 100) -> list[asyncpg.Record]:
    """Jobs whose lease expired (worker or server gone): requeue, or end them.

    A job with attempts left goes back to QUEUED at once (the lost worker already cost it an
    attempt); one on its last attempt ends FAILED; one whose cancellation was requested ends
    CANCELLED. SKIP LOCKED lets rescuers of several replicas share the work.
    """
    rows = await conn.fetch(
        f"""UPDATE retrain_jobs j SET
                state = CASE WHEN j.cancel_requested THEN 'CANCELLED'
                             WHEN j.attempt < j.max_attempts THEN 'QUEUED' ELSE 'FAILED' END,
                end_time = CASE WHEN j.cancel_requested OR j.attempt >= j.max_attempts THEN now() END,
                error = CASE WHEN j.cancel_requested THEN j.error
                             ELSE 'attempt ' || j.attempt || ': lease expired (worker ' ||
                                  coalesce(j.worker, '?') || ' lost)' END,
                progress_message = CASE WHEN j.cancel_requested THEN 'cancelled'
                                        WHEN j.attempt < j.max_attempts THEN 'rescued: waiting for a worker'
                                        ELSE 'failed' END,
                {_END_LEASE}, run_after = now(), update_time = now()
            FROM (SELECT id FROM retrain_jobs
                   WHERE state = 'RUNNING' AND lease_expires < now()
                   ORDER BY lease_expires LIMIT $1
                   FOR UPDATE SKIP LOCKED) expired
           WHERE j.id = expired.id
           RETURNING j.*""",
        limit,
    )
    if any(r["state"] == "QUEUED" for r in rows):
        await conn.execute("SELECT pg_notify($1, '')", JOBS_CHANNEL)
    return rows


async def get(conn: asyncpg.Connection, job_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM retrain_jobs WHERE id = $1", job_id)


async def list_jobs(conn: asyncpg.Connection, *, model_id: str | None, state: str | None,
                    before_id: int | None, limit: int, scopes: Sequence[str] | None = None) -> list[asyncpg.Record]:
    """Newest first; keyset paging on id (`before_id` is the last id of the previous page);
    `scopes`: only models matching one of these globs (None: all)."""
    return await conn.fetch(
        """SELECT * FROM retrain_jobs
            WHERE ($1::text IS NULL OR model_id = $1) AND ($2::text IS NULL OR state = $2)
              AND ($3::bigint IS NULL OR id < $3) AND ($5::text[] IS NULL OR model_id LIKE ANY($5::text[]))
            ORDER BY id DESC LIMIT $4""",
        model_id, state, before_id, limit, like_patterns(scopes),
    )


async def next_run_after(conn: asyncpg.Connection) -> float | None:
    """Seconds until the earliest QUEUED job becomes runnable (0 when one is now), None if none."""
    return await conn.fetchval(
        """SELECT greatest(extract(epoch FROM min(run_after) - now()), 0)::float8
             FROM retrain_jobs WHERE state = 'QUEUED'"""
    )
