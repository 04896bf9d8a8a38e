"""A server leaves no process behind: its training pool (forkserver, resource tracker, workers) ends
with it, on a clean stop and also when it is killed with SIGKILL and cannot stop the pool itself."""

from __future__ import annotations

import signal
import time

import psutil

from .helpers import start_server_process, stop_process


def _pool_processes(server_pid: int) -> list[psutil.Process]:
    """The server's descendants once its warm-up worker runs: forkserver, resource tracker, worker."""
    server = psutil.Process(server_pid)
    deadline = time.monotonic() + 60
    while True:
        children = server.children(recursive=True)
        forkservers = [p for p in children if "multiprocessing.forkserver" in " ".join(_cmdline(p))]
        if forkservers and forkservers[0].children():
            return children
        assert time.monotonic() < deadline, f"no worker process under the server: {children}"
        time.sleep(0.2)


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def _still_running(processes: list[psutil.Process], seconds: float) -> list[psutil.Process]:
    """Those of `processes` still running after waiting up to `seconds` for them to end."""
    deadline = time.monotonic() + seconds
    while True:
        alive = [p for p in processes if _running(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def _running(process: psutil.Process) -> bool:
    try:  # an orphan that ended but is not reaped yet is a zombie: it runs nothing any more
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _kill(processes: list[psutil.Process]) -> None:
    for p in processes:  # never leave a process behind, even when the test fails
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def test_a_sigkilled_servers_training_pool_exits_by_itself(database_url, tmp_path):
    proc, _ = start_server_process(database_url, tmp_path, "--workers", "2")
    pool = []
    try:
        pool = _pool_processes(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        left = _still_running(pool, 30)
        assert not left, f"the killed server's pool outlived it: {[(p.pid, _cmdline(p)) for p in left]}"
    finally:
        stop_process(proc)
        _kill(pool)


def test_a_clean_stop_leaves_no_process_behind(database_url, tmp_path):
    proc, _ = start_server_process(database_url, tmp_path, "--workers", "2")
    pool = []
    try:
        pool = _pool_processes(proc.pid)
        assert stop_process(proc) == 0
        left = _still_running(pool, 30)
        assert not left, f"processes outlived a clean stop: {[(p.pid, _cmdline(p)) for p in left]}"
    finally:
        stop_process(proc)
        _kill(pool)
