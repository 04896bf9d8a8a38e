"""Small helpers shared by acceptance tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def synthetic_model(model_id: str, /, **overrides) -> dict:
    model = {
        "model_id": model_id, "enabled": True,
        "training": {"estimator": "linear_model.SGDClassifier", "params": {"loss": "log_loss", "random_state": 0},
                     "synthetic": {"seed": 7, "drift": 0.3, "rows": 1500}, "target": "direction", "metric": "accuracy",
                     "holdout_fraction": 0.25, "promotion_margin": 0.0},
    }
    model.update(overrides)
    return model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server_process(database_url: str, data_dir, *extra: str) -> tuple[subprocess.Popen, str]:
    """`closedloop serve` in its own process; returns once its health check says SERVING."""
    port = free_port()
    cmd = [sys.executable, "-m", "closedloop.server.cli", "serve", "--database-url", database_url,
           "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{port}", "--age-sweep-interval", "0",
           "--log-format", "json", "--log-level", "warning", "--drain", "0", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ})
    target = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited early: {proc.stderr.read().decode()[-2000:]}")
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    return proc, target
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("server did not become healthy within 60 s")
            time.sleep(0.1)


def stop_process(proc: subprocess.Popen, timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
