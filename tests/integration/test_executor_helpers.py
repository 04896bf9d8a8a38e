"""Helpers shared by the executor tests (no tests here)."""

from __future__ import annotations

import asyncio
import time


async def wait_for(predicate, timeout: float = 60.0, interval: float = 0.05):
    """Poll an async predicate until it returns something truthy (timeout is only a hang guard)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)
