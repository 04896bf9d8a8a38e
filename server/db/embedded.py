"""The embedded PostgreSQL used when no --database-url is given (real PostgreSQL, from `pgserver`).

pgserver keeps one postmaster per data folder and stops it when its last user calls cleanup();
we start it in a worker thread because initdb + pg_ctl block for a second or so.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import warnings

import structlog

log = structlog.get_logger(__name__)


class EmbeddedPostgres:
    def __init__(self, data_dir: pathlib.Path) -> None:
        self.pgdata = pathlib.Path(data_dir) / "pg"
        self._server = None

    def start_blocking(self) -> str:
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers); pgserver falls back to /tmp.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pgserver

        self.pgdata.mkdir(parents=True, exist_ok=True)
        self._server = pgserver.get_server(self.pgdata, cleanup_mode="stop")
        uri = self._server.get_uri()
        log.info("db.embedded_started", pgdata=str(self.pgdata), pid=os.getpid())
        return uri

    async def start(self) -> str:
        return await asyncio.to_thread(self.start_blocking)

    def stop_blocking(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
            log.info("db.embedded_stopped", pgdata=str(self.pgdata))

    async def stop(self) -> None:
        await asyncio.to_thread(self.stop_blocking)
