"""The model-age sweep: raises `age` alerts for models whose current version has grown old.

No trading service reports a model's age, so the server does: every `interval` seconds it finds
enabled models whose current version is older than the smallest `model.age` threshold any active
rule tests, and sends each an alert through the normal ingest path (so rules, cooldowns and
feedback treat it like any other). The request_id names the model, version and day, so replicas
sweeping at once, or a sweep every few minutes, raise one alert per model version per day.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt

import asyncpg
import structlog

from closedloop.v1 import alert_pb2, common_pb2

from ..api import convert
from ..store import models as model_store
from .ingest import AlertIngestor
from .rule_engine import RuleEngine

log = structlog.get_logger(__name__)
SOURCE = "closedloop.age_sweep"


class AgeSweep:
    def __init__(self, pool: asyncpg.Pool, rules: RuleEngine, ingestor: AlertIngestor, interval: float) -> None:
        self.pool = pool
        self.rules = rules
        self.ingestor = ingestor
        self.interval = interval
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="age-sweep")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                await self.sweep_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a failed sweep must not end the sweeping
                log.exception("age_sweep.failed")
            await asyncio.sleep(self.interval)

    async def sweep_once(self) -> int:
        """Raise the due age alerts now; returns how many were sent."""
        active = self.rules.active
        threshold = active.ruleset.min_model_age_seconds() if active else None
        if threshold is None:
            return 0
        async with self.pool.acquire() as conn:
            old = await model_store.models_older_than(conn, threshold)
        now = dt.datetime.now(dt.timezone.utc)
        sent = 0
        for row in old:
            age_days = float(row["age_s"]) / 86400
            request = alert_pb2.CreateAlertRequest(
                alert=alert_pb2.Alert(
                    model_id=row["model_id"], type="age", severity=common_pb2.SEVERITY_LOW,
                    metrics={"model_age_days": round(age_days, 4)}, source=SOURCE,
                    labels={"version": str(row["current_version"])}),
                request_id=f"age:{row['model_id']}:v{row['current_version']}:{now.date().isoformat()}",
            )
            new = convert.new_alert(request, now)
            # Same id and day but a different age value: not a conflict, the earlier alert stands.
            new = dataclasses.replace(new, request_hash=convert.request_fingerprint(
                alert_pb2.Alert(model_id=row["model_id"], type="age", source=SOURCE)))
            result = await self.ingestor.submit(new)
            if result.created:
                sent += 1
                log.info("age_sweep.alert_raised", model_id=row["model_id"], age_days=round(age_days, 2),
                         version=row["current_version"])
        return sent
