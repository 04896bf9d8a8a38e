"""SQL for monitoring_retraining_integration: the model registry."""

from __future__ import annotations

import contextlib
import hashlib
from typing import AsyncIterator, Sequence

import asyncpg

MODEL_COLUMNS = """model_id, training, metric, promotion_margin, enabled, cooldown_override_s,
                   max_retrains_per_day, current_version, current_version_time, create_time, update_time"""

# Other replicas drop their cached model facts when this channel fires (payload: model_id).
MODELS_CHANGED_CHANNEL = "closedloop_models"


def like_patterns(scopes: Sequence[str] | None) -> list[str] | None:
    """A token's model scopes (globs of `*` and `?`, api/auth.py) as LIKE patterns for
    `model_id LIKE ANY(...)`; None (every model) stays None. LIKE's own wildcards are escaped."""
    if scopes is None:
        return None
    return [g.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_").replace("*", "%").replace("?", "_")
            for g in scopes]


async def upsert_model(conn: asyncpg.Connection, *, model_id: str, training: dict, metric: str,
                       promotion_margin: float, enabled: bool, cooldown_override_s: float | None,
                       max_retrains_per_day: int | None) -> asyncpg.Record:
    """Register or update; the current version and its history are kept on update."""
    row = await conn.fetchrow(
        f"""INSERT INTO monitoring_retraining_integration
                (model_id, training, metric, promotion_margin, enabled, cooldown_override_s, max_retrains_per_day)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (model_id) DO UPDATE SET
                training = EXCLUDED.training, metric = EXCLUDED.metric,
                promotion_margin = EXCLUDED.promotion_margin, enabled = EXCLUDED.enabled,
                cooldown_override_s = EXCLUDED.cooldown_override_s,
                max_retrains_per_day = EXCLUDED.max_retrains_per_day, update_time = now()
            RETURNING {MODEL_COLUMNS}""",
        model_id, training, metric, promotion_margin, enabled, cooldown_override_s, max_retrains_per_day,
    )
    await conn.execute("SELECT pg_notify($1, $2)", MODELS_CHANGED_CHANNEL, model_id)
    return row


async def get_model(conn: asyncpg.Connection, model_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {MODEL_COLUMNS} FROM monitoring_retraining_integration WHERE model_id = $1", model_id
    )


async def list_models(conn: asyncpg.Connection, *, after: str | None, limit: int,
                      scopes: Sequence[str] | None = None) -> list[asyncpg.Record]:
    """By model_id; `scopes`: only models matching one of these globs (None: all)."""
    return await conn.fetch(
        f"""SELECT {MODEL_COLUMNS} FROM monitoring_retraining_integration
             WHERE ($1::text IS NULL OR model_id > $1) AND ($3::text[] IS NULL OR model_id LIKE ANY($3::text[]))
             ORDER BY model_id LIMIT $2""",
        after, limit, like_patterns(scopes),
    )


# What rules may read about models: enabled, version, when the current version was promoted, when the
# last successful retrain ended (one probe of retrain_jobs_model_succeeded, migrations/0011, per model),
# and the database's clock (db_now) to read those times against; {models} selects the registry rows.
_FACTS = """SELECT m.model_id, m.enabled, m.current_version, m.current_version_time AS version_time,
                   (SELECT max(j.end_time) FROM retrain_jobs j
                     WHERE j.model_id = m.model_id AND j.state = 'SUCCEEDED') AS retrained_time,
                   now() AS db_now
              FROM ({models}) m
             ORDER BY m.model_id"""


async def model_facts(conn: asyncpg.Connection, model_ids: Sequence[str]) -> list[asyncpg.Record]:
    """The facts of these models (the registered ones among them)."""
    return await conn.fetch(
        _FACTS.format(models="SELECT * FROM monitoring_retraining_integration WHERE model_id = ANY($1::text[])"),
        list(model_ids))


async def model_facts_page(conn: asyncpg.Connection, after: str, limit: int) -> list[asyncpg.Record]:
    """The facts of the first `limit` registered models after `after` by model_id (the facts cache's
    bulk refresh reads every model in such pages)."""
    return await conn.fetch(
        _FACTS.format(models="""SELECT * FROM monitoring_retraining_integration WHERE model_id > $1
                                 ORDER BY model_id LIMIT $2"""),
        after, limit)


def _decision_lock_key(model_id: str) -> int:
    """A signed 64-bit advisory-lock key per model, the same in every replica."""
    digest = hashlib.blake2b(f"closedloop.decision:{model_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def decision_lock_keys(model_ids: Sequence[str]) -> list[int]:
    """The decision locks of `model_ids`, in the one order every writer takes them."""
    return sorted({_decision_lock_key(m) for m in model_ids})


@contextlib.asynccontextmanager
async def decision_transaction(conn: asyncpg.Connection, model_ids: Sequence[str]) -> AsyncIterator[None]:
    """A transaction holding the decision lock of each model; commits on success, rolls back on error.

    Every retrain decision for a model happens under its lock, which is what makes cooldowns and
    budgets exact across server replicas. The locks are transaction-scoped advisory locks: they cost
    no row writes (a FOR UPDATE would write every locked registry row), and they are taken in one
    fixed order so two replicas never deadlock. BEGIN and the locks go in one round trip: the keys
    are integers computed here, so the statement needs no parameters.

    The transaction's statements run on generic plans. PostgreSQL re-plans decision_state's
    `model_id = ANY($1)` for every execution (a custom plan looks cheaper for a short array, so the
    plan cache never switches), and planning it over the monthly partitions cost more than running
    it: on the 10M-alert database 1.1 ms -> 0.18 ms for one model, 1.4-4.2 -> 0.66 ms for eight, the
    same from fifty models on. The transaction's writes had switched to generic plans on their own.
    """
    keys = decision_lock_keys(model_ids)
    locks = ("; SELECT pg_advisory_xact_lock(k) FROM unnest('{" + ",".join(map(str, keys)) + "}'::bigint[]) AS k"
             if keys else "")
    await conn.execute("BEGIN; SET LOCAL plan_cache_mode = force_generic_plan" + locks)
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):  # a broken connection is discarded by the pool anyway
            await conn.execute("ROLLBACK")
        raise
    await conn.execute("COMMIT")


async def decision_state(conn: asyncpg.Connection, model_ids: Sequence[str],
                         cooldown_s: float) -> list[asyncpg.Record]:
    """What a retrain decision needs about each model (closedloop_decision_state, migration 0015):
    the registry row, the last retrain each rule queued, the last automated job, the automated jobs
    of the past day, the active job; with now() and the state's `fingerprint` (the same on every
    row), which closedloop_write_decided checks under the locks before writing decisions taken on it.

    Read under the decision locks (decision_transaction), this statement's snapshot includes whatever
    the previous lock holder committed; read without them, it is the optimistic read of
    `write_decided`. `cooldown_s`: the longest cooldown the decisions can apply. A rule's last
    retrain only matters within its cooldown (or the model's override), so older queued actions are
    filtered out in each month's index scan instead of being sorted: on ten million alerts, 0.58 ->
    0.37 ms p50 for five models; and only the months the longest of those look-backs reaches are
    visited at all (closedloop_decision_state, migration 0015)."""
    return await conn.fetch(
        """SELECT s.*, now() AS now,
                  md5(coalesce(string_agg(s::text, '|') OVER (
                      ORDER BY s.model_id ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING), ''))
                      AS fingerprint
             FROM closedloop_decision_state($1::text[], $2::float8) s""",
        list(model_ids), cooldown_s,
    )


async def models_older_than(conn: asyncpg.Connection, age_s: float) -> list[asyncpg.Record]:
    """Enabled models whose current version is older than age_s (for the age sweep)."""
    return await conn.fetch(
        """SELECT model_id, current_version, extract(epoch FROM now() - current_version_time) AS age_s
             FROM monitoring_retraining_integration
            WHERE enabled AND current_version > 0 AND current_version_time < now() - make_interval(secs => $1)
            ORDER BY model_id""",
        age_s,
    )
