"""The embedded PostgreSQL is stopped by the server that started it, even after a crash.

A `closedloop serve` killed with SIGKILL leaves its pid in pgserver's handle file; the next server on
the same data folder must still stop the postmaster on a clean SIGTERM (issue 10, point 6).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .helpers import free_port, stop_process


def _serve_embedded(data_dir) -> subprocess.Popen:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "closedloop.server.cli", "serve", "--data-dir", str(data_dir),
         "--listen", f"127.0.0.1:{port}", "--age-sweep-interval", "0", "--workers", "1",
         "--log-format", "json", "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    return proc
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, "server did not become healthy"
            time.sleep(0.2)


def running_postmaster_pid(pgdata) -> int | None:
    """The live pid in pgdata/postmaster.pid, read independently of the code under test."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def _wait_gone(pgdata, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if running_postmaster_pid(pgdata) is None:
            return True
        time.sleep(0.2)
    return False


def test_sigterm_after_a_killed_predecessor_stops_the_postmaster(tmp_path):
    pgdata = tmp_path / "pg"
    first = _serve_embedded(tmp_path)
    postmaster = None
    try:
        postmaster = running_postmaster_pid(pgdata)
        assert postmaster is not None
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        assert running_postmaster_pid(pgdata) == postmaster  # the crash left PostgreSQL running

        second = _serve_embedded(tmp_path)
        assert stop_process(second) == 0  # SIGTERM: a clean stop
        assert _wait_gone(pgdata, 30), "the postmaster outlived a clean stop"
    finally:
        if first.poll() is None:
            first.kill()
        pid = running_postmaster_pid(pgdata)
        if pid is not None:  # never leave a postmaster behind, even when the test fails
            os.kill(pid, signal.SIGTERM)
            _wait_gone(pgdata, 30)


def test_a_clean_stop_of_a_fresh_server_stops_the_postmaster(tmp_path):
    proc = _serve_embedded(tmp_path)
    try:
        assert running_postmaster_pid(tmp_path / "pg") is not None
    finally:
        assert stop_process(proc) == 0
    assert _wait_gone(tmp_path / "pg", 30)
