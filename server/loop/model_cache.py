"""Model facts for rule evaluation, cached per process and dropped when a model changes.

Rules read model.age / model.version / model.enabled on every alert; asking PostgreSQL each time
would double the cost of ingest. Entries live for `ttl` seconds at most, and a NOTIFY on
`closedloop_models` (sent by RegisterModel and promotions, from any replica) drops one at once.
Ages are computed at evaluation time from stored timestamps, so a cached entry never goes stale on age.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable

import asyncpg

from closedloop.dsl import ModelFacts

from ..store import models as model_store


@dataclass(frozen=True, slots=True)
class _Entry:
    registered: bool
    enabled: bool
    version: int
    version_epoch: float | None      # wall-clock seconds of the current version's promotion
    retrained_epoch: float | None
    fetched: float                   # monotonic


class ModelFactsCache:
    def __init__(self, pool: asyncpg.Pool, ttl: float = 5.0) -> None:
        self.pool = pool
        self.ttl = ttl
        self._entries: dict[str, _Entry] = {}

    def invalidate(self, model_id: str | None = None) -> None:
        if model_id is None:
            self._entries.clear()
        else:
            self._entries.pop(model_id, None)

    async def get_many(self, model_ids: Iterable[str]) -> dict[str, ModelFacts | None]:
        now_mono = time.monotonic()
        wanted = set(model_ids)
        missing = [m for m in wanted
                   if (e := self._entries.get(m)) is None or now_mono - e.fetched > self.ttl]
        if missing:
            await self._load(missing)
        now = time.time()
        out: dict[str, ModelFacts | None] = {}
        for m in wanted:
            e = self._entries.get(m)
            if e is None or not e.registered:
                out[m] = None
                continue
            out[m] = ModelFacts(
                registered=True, enabled=e.enabled, version=e.version,
                age_seconds=None if e.version_epoch is None else max(0.0, now - e.version_epoch),
                last_retrained_seconds=None if e.retrained_epoch is None else max(0.0, now - e.retrained_epoch),
            )
        return out

    async def _load(self, model_ids: list[str]) -> None:
        async with self.pool.acquire() as conn:
            rows = await model_store.model_facts(conn, model_ids)
        fetched = time.monotonic()
        now = time.time()
        found = {}
        for r in rows:
            found[r["model_id"]] = _Entry(
                registered=True, enabled=r["enabled"], version=r["current_version"],
                version_epoch=None if r["age_s"] is None else now - float(r["age_s"]),
                retrained_epoch=None if r["last_retrained_s"] is None else now - float(r["last_retrained_s"]),
                fetched=fetched,
            )
        for m in model_ids:
            self._entries[m] = found.get(m) or _Entry(False, False, 0, None, None, fetched)
        # Bound memory when alerts name many unknown models.
        if len(self._entries) > 100_000:
            self._entries.clear()
