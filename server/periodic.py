"""A background task that runs one pass every `interval` seconds, for as long as the server runs.

The age sweep, the feedback roll-up and partition maintenance are all "do one pass, sleep, repeat,
and never let one failed pass end the loop"; they subclass this and write `run_once` only. A leaf
module (layer 0 in tests/unit/test_layering.py) so any layer's task can use it.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod

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
