"""SQL around retraining jobs that is not the queue itself: the model's spec as the executor reads
it, the version serving after each job, and the feedback_loop_metrics row every finished job writes.

(The queue's own statements are in store/queue.py; versions and promotions in store/versions.py.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import asyncpg


@dataclass(frozen=True)
class ModelSpec:
    """What the executor needs of a registered model."""

    model_id: str
    training: dict  # TrainingSpec as protobuf JSON (preserving_proto_field_name)
    metric: str
    promotion_margin: float
    enabled: bool
    current_version: int


async def load_model_spec(conn: asyncpg.Connection, model_id: str) -> ModelSpec | None:
    row = await conn.fetchrow(
        """SELECT model_id, training, metric, promotion_margin, enabled, current_version
             FROM monitoring_retraining_integration WHERE model_id = $1""",
        model_id,
    )
    if row is None:
        return None
    return ModelSpec(row["model_id"], dict(row["training"] or {}), row["metric"], float(row["promotion_margin"]),
                     row["enabled"], row["current_version"])


async def model_exists(conn: asyncpg.Connection, model_id: str) -> bool:
    return bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM monitoring_retraining_integration WHERE model_id = $1)", model_id
    ))


async def serving_versions(conn: asyncpg.Connection, jobs: Sequence[asyncpg.Record]) -> dict[int, int]:
    """{job id: the model's version serving when the job ended} for the SUCCEEDED jobs among `jobs`.

    A promoted job's own version (retrain_jobs.new_version is the version it trained). Otherwise the
    version that the model's last promotion or rollback up to the job's end made current: the
    champion that stayed, or a rollback that landed while the job ran; 0 when none was serving.
    model_promotions rows are written under the model's row lock, so their ids follow the order in
    which the versions became current, and the job's end_time is the time of its finishing
    transaction, the same clock as a promotion's create_time.
    """
    serving = {j["id"]: j["new_version"] for j in jobs if j["state"] == "SUCCEEDED" and j["promoted"]}
    kept = [j["id"] for j in jobs if j["state"] == "SUCCEEDED" and not j["promoted"]]
    if kept:
        rows = await conn.fetch(
            """SELECT j.id,
                      coalesce((SELECT p.to_version FROM model_promotions p
                                 WHERE p.model_id = j.model_id AND p.create_time <= j.end_time
                                 ORDER BY p.id DESC LIMIT 1), 0) AS serving_version
                 FROM retrain_jobs j WHERE j.id = ANY($1::bigint[])""",
            kept,
        )
        serving.update((r["id"], r["serving_version"]) for r in rows)
    return serving


def feedback_insert_sql(source: str) -> str:
    """INSERT of one feedback_loop_metrics row per ended job in `source` (a table or CTE name
    with retrain_jobs' columns).

    improvement is the job's own, stored as the trainer computed it (challenger minus champion in
    the metric's better direction; NULL for a first version: no champion). alert_to_promotion_s
    runs from the trigger alert's observe_time (when the trading service saw the problem) to now,
    for promoted jobs started by an alert.
    """
    return f"""INSERT INTO feedback_loop_metrics
               (time, model_id, job_id, alert_id, action_id, rule, manual, mode, outcome, metric,
                champion_metric, challenger_metric, improvement, promotion_margin, promoted, new_version,
                queue_wait_s, run_s, alert_to_promotion_s)
           SELECT now(), j.model_id, j.id, j.trigger_alert_id, j.trigger_action_id, j.trigger_rule, j.manual,
                  j.mode, j.state, j.metric, j.champion_metric, j.challenger_metric,
                  j.improvement,
                  m.promotion_margin, j.promoted, nullif(j.new_version, 0),
                  extract(epoch FROM j.start_time - j.create_time),
                  extract(epoch FROM coalesce(j.end_time, now()) - j.start_time),
                  CASE WHEN j.promoted THEN extract(epoch FROM now() - a.observe_time) END
             FROM {source} j
             LEFT JOIN monitoring_retraining_integration m ON m.model_id = j.model_id
             LEFT JOIN monitoring_alert_triggers a ON a.id = j.trigger_alert_id"""


async def record_feedback(conn: asyncpg.Connection, job: asyncpg.Record) -> None:
    """One feedback_loop_metrics row for a job that just ended (any terminal state)."""
    await conn.execute(feedback_insert_sql("retrain_jobs") + " WHERE j.id = $1", job["id"])
