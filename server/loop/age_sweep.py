"""The model-age sweep: raises `age` alerts for models whose current version has grown old.

No trading service reports a model's age, so the server does: every `interval` seconds it finds
enabled models whose current version is older than the smallest `model.age` threshold any active
rule tests, and sends each an alert through the normal ingest path (so rules, cooldowns and
feedback treat it like any other). The request_id names the model, version and day, so replicas
sweeping at once, or a sweep every few minutes, raise one alert per model version per day.

The alert's severity grows with how far past that threshold the model is (`age_severity`): under
1.5x low, under 2x medium, under 4x high, from 4x on critical; so a `severity >= medium` rule
sees a model once it is half again as old as the youngest age any rule cares about.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib

import asyncpg
import structlog

from closedloop.dsl.schema import LEVELS

from ..errors import AlreadyExists
from ..periodic import PeriodicTask
from ..store import models as model_store
from ..store.alerts import NewAlert
from .ingest import AlertIngestor
from .rule_engine import RuleEngine

log = structlog.get_logger(__name__)
SOURCE = "closedloop.age_sweep"
# (how many times the threshold age, at most; severity). Past the last bound: critical.
SEVERITY_BY_AGE_RATIO = ((1.5, LEVELS["low"]), (2.0, LEVELS["medium"]), (4.0, LEVELS["high"]))


def age_severity(age_s: float, threshold_s: float) -> int:
    """The severity of an age alert: how far past the smallest `model.age` threshold the model is."""
    ratio = age_s / threshold_s if threshold_s > 0 else float("inf")
    return next((level for bound, level in SEVERITY_BY_AGE_RATIO if ratio < bound), LEVELS["critical"])


class AgeSweep(PeriodicTask):
    name = "age_sweep"

    def __init__(self, pool: asyncpg.Pool, rules: RuleEngine, ingestor: AlertIngestor, interval: float) -> None:
        super().__init__(interval)
        self.pool = pool
        self.rules = rules
        self.ingestor = ingestor

    async def run_once(self) -> int:
        return await self.sweep_once()

    async def sweep_once(self) -> int:
        """Raise the due age alerts now; returns how many were sent.

        The alerts go to the ingestor all at once (one task each, queued in model order), so the
        group commit writes them in a few batches instead of one commit per model: one by one, a
        sweep over 10,000 models with ~200 due waited for ~200 commits in a row. Each still has
        its own request_id and goes through the same decisions (cooldowns, budgets, one job per
        model), in the order submitted.
        """
        active = self.rules.active
        threshold = active.ruleset.min_model_age_seconds() if active else None
        if threshold is None:
            return 0
        async with self.pool.acquire() as conn:
            old = await model_store.models_older_than(conn, threshold)
        now = dt.datetime.now(dt.timezone.utc)
        alerts = [self._alert(row, threshold, now) for row in old]
        results = await asyncio.gather(*(self.ingestor.submit(new, now) for new in alerts), return_exceptions=True)
        sent = 0
        failure = None
        for row, new, result in zip(old, alerts, results):
            if isinstance(result, AlreadyExists):  # raised today by an older closedloop with another fingerprint
                continue
            if isinstance(result, BaseException):
                failure = failure or result
                continue
            if result.created:
                sent += 1
                log.info("age_sweep.alert_raised", model_id=row["model_id"],
                         age_days=round(float(row["age_s"]) / 86400, 2), version=row["current_version"],
                         severity=new.severity)
        if failure is not None:
            raise failure  # the pass failed (logged by PeriodicTask); the next one retries what is missing
        return sent

    @staticmethod
    def _alert(row, threshold: float, now: dt.datetime) -> NewAlert:
        age_s = float(row["age_s"])
        return NewAlert(
            request_id=f"age:{row['model_id']}:v{row['current_version']}:{now.date().isoformat()}",
            # Same id and day but a different age value: not a conflict, the earlier alert stands.
            request_hash=hashlib.sha256(f"{SOURCE}\0{row['model_id']}".encode()).digest(),
            model_id=row["model_id"], alert_type="age", severity=age_severity(age_s, threshold),
            metrics={"model_age_days": round(age_s / 86400, 4)}, labels={"version": str(row["current_version"])},
            source=SOURCE, observe_time=now)
