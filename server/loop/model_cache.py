"""Model facts for rule evaluation, cached per process and dropped when a model changes.

Rules read model.age / model.version / model.enabled on every alert; asking PostgreSQL each time
would double the cost of ingest. Entries live for `ttl` seconds at most, and a NOTIFY on
`closedloop_models` (sent by RegisterModel and promotions, from any replica) drops one at once.
An entry holds timestamps, not ages: the facts are computed for each alert relative to the time
the alert was received (closedloop.dsl.facts.model_facts), so a cached entry never goes stale on age.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Iterable

import asyncpg

from closedloop.dsl import ModelFacts
from closedloop.dsl.facts import model_facts

from ..store import models as model_store


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """A registered model's facts as timestamps; `facts_at` makes the ModelFacts a rule reads."""

    enabled: bool
    version: int
    version_time: dt.datetime | None    # when the current version was promoted
    retrained_time: dt.datetime | None  # when the last retrain finished

    def facts_at(self, received: dt.datetime) -> ModelFacts:
        return model_facts(enabled=self.enabled, version=self.version, version_time=self.version_time,
                           retrained_time=self.retrained_time, received=received)


@dataclass(frozen=True, slots=True)
class _Cached:
    entry: ModelEntry | None  # None: not registered
    fetched: float            # monotonic


class ModelFactsCache:
    def __init__(self, pool: asyncpg.Pool, ttl: float = 5.0) -> None:
        self.pool = pool
        self.ttl = ttl
        self._entries: dict[str, _Cached] = {}

    def invalidate(self, model_id: str | None = None) -> None:
        if model_id is None:
            self._entries.clear()
        else:
            self._entries.pop(model_id, None)

    async def entries(self, model_ids: Iterable[str]) -> dict[str, ModelEntry | None]:
        """Per model its cached entry (None: not registered), loading the missing and expired ones."""
        now_mono = time.monotonic()
        wanted = set(model_ids)
        missing = [m for m in wanted
                   if (c := self._entries.get(m)) is None or now_mono - c.fetched > self.ttl]
        if missing:
            await self._load(missing)
        return {m: c.entry if (c := self._entries.get(m)) is not None else None for m in wanted}

    async def get_many(self, model_ids: Iterable[str],
                       received: dt.datetime | None = None) -> dict[str, ModelFacts | None]:
        """The facts of each model for an alert received at `received` (default: now; None: not registered)."""
        received = received or dt.datetime.now(dt.timezone.utc)
        return {m: e.facts_at(received) if e is not None else None
                for m, e in (await self.entries(model_ids)).items()}

    async def _load(self, model_ids: list[str]) -> None:
        async with self.pool.acquire() as conn:
            rows = await model_store.model_facts(conn, model_ids)
        fetched = time.monotonic()
        # The store gives ages relative to the database's clock; anchor them on ours once.
        now = dt.datetime.now(dt.timezone.utc)
        found = {}
        for r in rows:
            found[r["model_id"]] = ModelEntry(
                enabled=r["enabled"], version=r["current_version"],
                version_time=None if r["age_s"] is None else now - dt.timedelta(seconds=float(r["age_s"])),
                retrained_time=(None if r["last_retrained_s"] is None
                                else now - dt.timedelta(seconds=float(r["last_retrained_s"]))),
            )
        for m in model_ids:
            self._entries[m] = _Cached(found.get(m), fetched)
        # Bound memory when alerts name many unknown models.
        if len(self._entries) > 100_000:
            self._entries.clear()
