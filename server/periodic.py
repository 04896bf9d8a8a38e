"""A background task that runs one pass every `interval` seconds, for as long as the server runs.

The age sweep, the roll-ups and partition maintenance are all "do one pass, sleep, repeat, and never
let one failed pass end the loop"; they subclass this and write `run_once` only (the roll-ups, which
differ only in their pass, use `RollupTask`). A leaf module (layer 0 in tests/unit/test_layering.py)
so any layer's task can use it.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import Awaitable, Callable

import asyncpg
import structlog

log = structlog.get_logger(__name__)


class PeriodicTask(ABC):
    name = "periodic"  # the asyncio task's name, and the log event prefix of a failed pass

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._task: asyncio.Task | None = None

    @abstractmethod
    async def run_once(self):
        """One pass; what each task does."""

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a failed pass is retried at the next interval
                log.exception(f"{self.name}.failed")
            await asyncio.sleep(self.interval)


class RollupTask(PeriodicTask):
    """Runs `roll_up(pool)` (a pass returning how many alerts it counted) every `interval` seconds. A
    database error fails the pass with a warning and nothing else: a roll-up resumes from its watermark."""

    def __init__(self, name: str, roll_up: Callable[[asyncpg.Pool], Awaitable[int]], pool: asyncpg.Pool,
                 interval: float) -> None:
        super().__init__(interval)
        self.name = name
        self.roll_up = roll_up
        self.pool = pool

    async def run_once(self) -> int:
        try:
            counted = await self.roll_up(self.pool)
        except (asyncpg.PostgresError, OSError) as exc:
            log.warning(f"{self.name}.failed_pass", error=str(exc))  # the next pass retries
            return 0
        if counted:
            log.info(f"{self.name}.counted", alerts=counted)
        return counted
