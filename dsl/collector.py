"""Pausing Python's cyclic garbage collector around work that builds many objects at once.

Parsing a large rule file, replaying a million stored alerts (server/loop/backtest.py) and a
feedback report over every model (server/feedback/report.py) each hold hundreds of thousands of
small objects, none in a reference cycle, alive until they finish; the collector would walk them
again and again as they pile up (40% of a large parse, 0.5-0.9 s of a report or a replay).
Reference counting still frees everything as usual; only cycles made meanwhile (by anything in the
process) wait until the last pause ends. It lives here, at the bottom of the layers, because the
rule language and the server pause it alike and must count their pauses together.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator

_pauses = 0       # pauses in force now (overlapping requests of an asyncio server, in any order)
_resume = False   # whether the first of them found the collector on


@contextmanager
def gc_paused() -> Iterator[None]:
    """The collector off until the last overlapping pause ends, then back on if it was on before
    the first (a collector someone else turned off stays off); also when the work raises."""
    global _pauses, _resume
    if _pauses == 0:
        _resume = gc.isenabled()
        gc.disable()
    _pauses += 1
    try:
        yield
    finally:
        _pauses -= 1
        if _pauses == 0 and _resume:
            gc.enable()
