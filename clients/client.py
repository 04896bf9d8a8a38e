"""closedloop.Client (blocking) and closedloop.AsyncClient (asyncio) over the generated stubs.

Both add what every trading service needs and would otherwise write itself:
- a default deadline per call (`timeout`);
- retries by gRPC's own retry policy (the channel's service config): a call answered UNAVAILABLE
  (restarts, database failover) or RESOURCE_EXHAUSTED (overload; the server's
  `grpc-retry-pushback-ms` trailer, when it sends one, sets the delay or forbids the retry) is sent
  again with exponential backoff and jitter. Calls that create things carry a request_id generated
  once per logical call; gRPC resends the same bytes, so every retry carries that id and the server
  stores the thing once. RollbackModel is not idempotent and is never retried;
- `wait_for_ready=True` (off by default, so a dead server is reported fast): while no connection can
  be made (the server is restarting) a call waits for one within its deadline instead of failing once
  the retry policy's attempts are spent. gRPC caps a policy at 5 attempts, so `retries` above 4 count as 4;
- bearer tokens and TLS / mutual TLS.
"""

from __future__ import annotations

import json
from typing import Any, AsyncIterable, AsyncIterator, Iterable, Iterator

import grpc

from ._calls import CallsMixin
from .v1 import (alert_pb2, alert_pb2_grpc, monitor_pb2_grpc, notify_pb2_grpc, retrain_pb2, retrain_pb2_grpc,
                 rules_pb2_grpc)

DEFAULT_TARGET = "127.0.0.1:50051"
RETRYABLE = ("UNAVAILABLE", "RESOURCE_EXHAUSTED")
MAX_ATTEMPTS = 5  # gRPC caps a retry policy's maxAttempts at 5 (first try included)
_STUBS = {
    "AlertService": alert_pb2_grpc.AlertServiceStub,
    "RuleService": rules_pb2_grpc.RuleServiceStub,
    "RetrainService": retrain_pb2_grpc.RetrainServiceStub,
    "NotificationService": notify_pb2_grpc.NotificationServiceStub,
    "MonitorService": monitor_pb2_grpc.MonitorServiceStub,
}
# Methods that must never be resent: a second RollbackModel would roll back one version further.
_NOT_IDEMPOTENT = (("closedloop.v1.RetrainService", "RollbackModel"),)


def service_config(retries: int, backoff: float, max_backoff: float, wait_for_ready: bool) -> str:
    """The channel's service config (JSON): one retry policy for every closedloop.v1 service,
    none for the methods in _NOT_IDEMPOTENT (the most specific name wins in gRPC's lookup)."""
    services = [{"service": f"closedloop.v1.{name}"} for name in _STUBS]
    method_config = [{"name": services, "waitForReady": wait_for_ready}]
    attempts = min(MAX_ATTEMPTS, retries + 1)
    if attempts > 1:
        method_config[0]["retryPolicy"] = {
            "maxAttempts": attempts,
            "initialBackoff": f"{backoff:.3f}s",
            "maxBackoff": f"{max(backoff, max_backoff):.3f}s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": list(RETRYABLE),
        }
    method_config.append({"name": [{"service": s, "method": m} for s, m in _NOT_IDEMPOTENT],
                          "waitForReady": wait_for_ready})
    return json.dumps({"methodConfig": method_config})


def _credentials(tls: bool, root_certificates: bytes | None, client_cert: bytes | None,
                 client_key: bytes | None):
    if not (tls or root_certificates or client_cert):
        return None
    return grpc.ssl_channel_credentials(root_certificates=root_certificates, private_key=client_key,
                                        certificate_chain=client_cert)


class _Options:
    def __init__(self, target: str, token: str | None, timeout: float, retries: int, backoff: float,
                 max_backoff: float, max_message_bytes: int, wait_for_ready: bool) -> None:
        self.target = target
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout = timeout
        self.channel_options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.enable_retries", 1),
            ("grpc.service_config", service_config(retries, backoff, max_backoff, wait_for_ready)),
        ]

    def call_metadata(self, request: Any) -> tuple:
        """The call's metadata: the token, and the request_id as x-request-id so that the server's
        log lines of this call (and of its retries) carry the id the caller knows."""
        request_id = getattr(request, "request_id", "")
        return self.metadata + ((("x-request-id", request_id),) if request_id else ())


class AsyncClient(CallsMixin):
    """asyncio client: `async with AsyncClient("host:port") as c: await c.create_alert(...)`."""

    def __init__(self, target: str = DEFAULT_TARGET, *, token: str | None = None, tls: bool = False,
                 root_certificates: bytes | None = None, client_cert: bytes | None = None,
                 client_key: bytes | None = None, timeout: float = 10.0, retries: int = 5,
                 backoff: float = 0.1, max_backoff: float = 2.0, max_message_bytes: int = 4 * 1024 * 1024,
                 wait_for_ready: bool = False) -> None:
        self._opts = _Options(target, token, timeout, retries, backoff, max_backoff, max_message_bytes,
                              wait_for_ready)
        creds = _credentials(tls, root_certificates, client_cert, client_key)
        self.channel = (grpc.aio.secure_channel(target, creds, options=self._opts.channel_options) if creds
                        else grpc.aio.insecure_channel(target, options=self._opts.channel_options))
        self._stubs = {name: cls(self.channel) for name, cls in _STUBS.items()}

    async def _invoke(self, service: str, method: str, request: Any, timeout: float | None = None):
        call = getattr(self._stubs[service], method)
        return await call(request, timeout=timeout or self._opts.timeout, metadata=self._opts.call_metadata(request))

    def stream_alerts(self, requests: AsyncIterable[alert_pb2.CreateAlertRequest] | Iterable,
                      *, timeout: float | None = None) -> AsyncIterator[alert_pb2.Alert]:
        """High-rate ingest: one stored Alert back per request, in order. Not retried (a stream is
        not idempotent as a whole); resend the unanswered requests with their request_ids instead."""
        return self._stubs["AlertService"].StreamAlerts(requests, timeout=timeout, metadata=self._opts.metadata)

    async def watch_job(self, job_id: str) -> AsyncIterator[retrain_pb2.RetrainJob]:
        stream = self._stubs["RetrainService"].WatchJob(
            self._watch_job_request(job_id), metadata=self._opts.metadata)
        async for job in stream:
            yield job

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Client(CallsMixin):
    """Blocking client: `with Client("host:port") as c: c.create_alert(...)`."""

    def __init__(self, target: str = DEFAULT_TARGET, *, token: str | None = None, tls: bool = False,
                 root_certificates: bytes | None = None, client_cert: bytes | None = None,
                 client_key: bytes | None = None, timeout: float = 10.0, retries: int = 5,
                 backoff: float = 0.1, max_backoff: float = 2.0, max_message_bytes: int = 4 * 1024 * 1024,
                 wait_for_ready: bool = False) -> None:
        self._opts = _Options(target, token, timeout, retries, backoff, max_backoff, max_message_bytes,
                              wait_for_ready)
        creds = _credentials(tls, root_certificates, client_cert, client_key)
        self.channel = (grpc.secure_channel(target, creds, options=self._opts.channel_options) if creds
                        else grpc.insecure_channel(target, options=self._opts.channel_options))
        self._stubs = {name: cls(self.channel) for name, cls in _STUBS.items()}

    def _invoke(self, service: str, method: str, request: Any, timeout: float | None = None):
        call = getattr(self._stubs[service], method)
        return call(request, timeout=timeout or self._opts.timeout, metadata=self._opts.call_metadata(request))

    def stream_alerts(self, requests: Iterable[alert_pb2.CreateAlertRequest],
                      *, timeout: float | None = None) -> Iterator[alert_pb2.Alert]:
        return self._stubs["AlertService"].StreamAlerts(iter(requests), timeout=timeout, metadata=self._opts.metadata)

    def watch_job(self, job_id: str) -> Iterator[retrain_pb2.RetrainJob]:
        return self._stubs["RetrainService"].WatchJob(
            self._watch_job_request(job_id), metadata=self._opts.metadata)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
