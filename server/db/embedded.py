"""The embedded PostgreSQL used when no --database-url is given (real PostgreSQL, from `pgserver`).

pgserver keeps one postmaster per data folder and stops it when its last user calls cleanup();
we start it in a worker thread because initdb + pg_ctl block for a second or so.

pgserver counts its users in a handle file (a list of pids) inside the data folder. A server killed
with SIGKILL never removes its pid, so after a restart the count never drops to zero and a clean
stop would leave the postmaster running. Two things keep that from happening: dead pids are pruned
from the handle file before we join, and a server that started the postmaster itself stops it on
the way out whatever the handle file says (another live closedloop on the same folder would have
found the postmaster running and so would not own it).
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import warnings

import structlog

log = structlog.get_logger(__name__)

HANDLE_FILE = ".handle_pids.json"  # pgserver's list of the pids using this data folder


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def prune_dead_handles(pgdata: pathlib.Path) -> list[int]:
    """Drop the pids of processes that no longer exist from pgserver's handle file; returns them."""
    path = pgdata / HANDLE_FILE
    try:
        pids = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return []
    if not isinstance(pids, list):
        return []
    dead = [p for p in pids if not (isinstance(p, int) and _pid_alive(p))]
    if dead:
        path.write_text(json.dumps([p for p in pids if p not in dead]))
    return dead


def running_postmaster_pid(pgdata: pathlib.Path) -> int | None:
    """The pid in postmaster.pid when that process is alive, else None."""
    try:
        first = (pgdata / "postmaster.pid").read_text().splitlines()[0]
        pid = int(first.strip())
    except (FileNotFoundError, IndexError, ValueError):
        return None
    return pid if _pid_alive(pid) else None


class EmbeddedPostgres:
    def __init__(self, data_dir: pathlib.Path) -> None:
        self.pgdata = pathlib.Path(data_dir) / "pg"
        self._server = None
        self._started_postmaster = False

    def start_blocking(self) -> str:
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers); pgserver falls back to /tmp.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pgserver

        self.pgdata.mkdir(parents=True, exist_ok=True)
        dead = prune_dead_handles(self.pgdata)
        if dead:
            log.warning("db.embedded_stale_handles", pids=dead, pgdata=str(self.pgdata))
        already_running = running_postmaster_pid(self.pgdata) is not None
        self._server = pgserver.get_server(self.pgdata, cleanup_mode="stop")
        self._started_postmaster = not already_running
        uri = self._server.get_uri()
        log.info("db.embedded_started", pgdata=str(self.pgdata), pid=os.getpid(),
                 started_postmaster=self._started_postmaster)
        return uri

    async def start(self) -> str:
        return await asyncio.to_thread(self.start_blocking)

    def stop_blocking(self) -> None:
        if self._server is None:
            return
        self._server.cleanup()
        self._server = None
        if self._started_postmaster and running_postmaster_pid(self.pgdata) is not None:
            # pgserver thought someone else still used it (a stale handle it could not see as stale,
            # e.g. a pid reused by an unrelated process): we started it, so we stop it.
            from pgserver._commands import pg_ctl  # pgserver's own wrapper; pinned <0.2 in pyproject

            import subprocess

            user = "pgserver" if os.geteuid() == 0 else None  # pgserver runs postgres as this user under root
            try:
                pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=user)
            except subprocess.CalledProcessError:  # it stopped between our check and pg_ctl
                pass
        log.info("db.embedded_stopped", pgdata=str(self.pgdata))

    async def stop(self) -> None:
        await asyncio.to_thread(self.stop_blocking)
