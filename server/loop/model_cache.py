"""Model facts for rule evaluation, cached per process, refreshed in bulk and dropped when a model changes.

Rules read model.age / model.version / model.enabled on every alert; asking PostgreSQL each time
would double the cost of ingest. Entries live for `ttl` seconds at most, a NOTIFY on
`closedloop_models` (sent by RegisterModel and promotions, from any replica) drops one at once, and
FactsRefresher re-reads every model in pages before its entry expires.
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

from ..periodic import PeriodicTask
from ..store import models as model_store


# Models per statement of the bulk refresh.
REFRESH_PAGE = 1000


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
    fetched: float            # monotonic, taken before the statement that read it was sent


class ModelFactsCache:
    """Per model its facts, used for `ttl` seconds from the moment their read began.

    `refresh_all` (run every ttl/2 by FactsRefresher) reads every registered model in a few statements,
    so with ten thousand models no alert waits for a facts read; a model the refresh has not covered
    (an alert's first model before the first refresh, an unregistered model, one a NOTIFY dropped, or
    every model when refreshes fail) is read on the alert's path as before. What bounds staleness is
    unchanged: a change announced by NOTIFY (registration, update, promotion, rollback) is dropped at
    once; any other (a retrain that finished without a promotion changes `model.last_retrained`) is
    seen at most `ttl` seconds after it committed.
    """

    def __init__(self, pool: asyncpg.Pool, ttl: float = 5.0) -> None:
        self.pool = pool
        self.ttl = ttl
        self._entries: dict[str, _Cached] = {}
        # Invalidations: each bumps the generation; a read that began before a model's invalidation
        # must not put back what it read (it may predate the change the NOTIFY announced).
        self._generation = 0
        self._dropped: dict[str, int] = {}  # model -> generation of its last invalidation
        self._cleared = 0                   # generation of the last invalidate(None)
        self.misses = 0                     # models read on an alert's path (not by refresh_all)

    def invalidate(self, model_id: str | None = None) -> None:
        self._generation += 1
        if model_id is None:
            self._entries.clear()
            self._dropped.clear()
            self._cleared = self._generation
        else:
            self._entries.pop(model_id, None)
            self._dropped[model_id] = self._generation

    async def entries(self, model_ids: Iterable[str]) -> dict[str, ModelEntry | None]:
        """Per model its cached entry (None: not registered), loading the missing and expired ones."""
        now_mono = time.monotonic()
        wanted = set(model_ids)
        found: dict[str, ModelEntry | None] = {}
        missing = []
        for m in wanted:
            if (c := self._entries.get(m)) is None or now_mono - c.fetched > self.ttl:
                missing.append(m)
            else:
                found[m] = c.entry
        if missing:
            self.misses += len(missing)
            loaded = await self._load(missing)
            found.update((m, loaded.get(m)) for m in missing)
        return found

    async def get_many(self, model_ids: Iterable[str],
                       received: dt.datetime | None = None) -> dict[str, ModelFacts | None]:
        """The facts of each model for an alert received at `received` (default: now; None: not registered)."""
        received = received or dt.datetime.now(dt.timezone.utc)
        return {m: e.facts_at(received) if e is not None else None
                for m, e in (await self.entries(model_ids)).items()}

    async def refresh_all(self) -> int:
        """Read every registered model's facts, REFRESH_PAGE models per statement; returns how many.

        Pages keep each statement short and let alerts be served between them: ten thousand rows
        decoded at once would hold the event loop for tens of milliseconds."""
        after, count = "", 0
        while True:
            page = await self._load(after=after)
            count += len(page)
            if len(page) < REFRESH_PAGE:
                return count
            after = max(page)

    async def _load(self, model_ids: list[str] | None = None, after: str = "") -> dict[str, ModelEntry]:
        """The facts of `model_ids` (or of the page after `after`) read now, registered models only;
        cached unless an invalidation overtook the read."""
        generation, began = self._generation, time.monotonic()
        async with self.pool.acquire() as conn:
            rows = await (model_store.model_facts(conn, model_ids) if model_ids is not None
                          else model_store.model_facts_page(conn, after, REFRESH_PAGE))
        # The stored times are on the database's clock; shift them onto ours once per read, so the
        # ages a rule reads (relative to when this server received the alert) do not depend on skew.
        shift = dt.datetime.now(dt.timezone.utc) - rows[0]["db_now"] if rows else dt.timedelta(0)
        found = {}
        for r in rows:
            version_time, retrained_time = r["version_time"], r["retrained_time"]
            found[r["model_id"]] = ModelEntry(
                enabled=r["enabled"], version=r["current_version"],
                version_time=None if version_time is None else version_time + shift,
                retrained_time=None if retrained_time is None else retrained_time + shift)
        if self._cleared > generation:
            return found  # everything was dropped while this read ran
        # A page says nothing about models it did not find (one may register meanwhile): only the
        # models asked for by name are cached as not registered.
        for m in (model_ids if model_ids is not None else found):
            if self._dropped.get(m, 0) <= generation:
                self._entries[m] = _Cached(found.get(m), began)
        # Bound memory when alerts name many unknown models.
        if len(self._entries) > 100_000:
            self._entries.clear()
        return found


class FactsRefresher(PeriodicTask):
    """Keeps every registered model's facts fresh: a bulk read every ttl/2 seconds, so an entry is
    replaced before it expires even when one refresh takes up to half the TTL."""

    name = "model_facts_refresh"

    def __init__(self, cache: ModelFactsCache) -> None:
        super().__init__(cache.ttl / 2)
        self.cache = cache

    async def run_once(self) -> int:
        return await self.cache.refresh_all()
