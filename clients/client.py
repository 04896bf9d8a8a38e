"""closedloop.Client (blocking) and closedloop.AsyncClient (asyncio) over the generated stubs.

Both add what every trading service needs and would otherwise write itself:
- a default deadline per call (`timeout`);
- retries with exponential backoff and jitter while the server answers UNAVAILABLE (restarts,
  database failover). Calls that create things carry a request_id generated once per logical call
  and reused by every retry, so a retry never creates a duplicate;
- bearer tokens and TLS / mutual TLS.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any, AsyncIterable, AsyncIterator, Iterable, Iterator

import grpc

from ._calls import CallsMixin
from .v1 import alert_pb2, alert_pb2_grpc, retrain_pb2, retrain_pb2_grpc, rules_pb2_grpc

DEFAULT_TARGET = "127.0.0.1:50051"
RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)
_STUBS = {
    "AlertService": alert_pb2_grpc.AlertServiceStub,
    "RuleService": rules_pb2_grpc.RuleServiceStub,
    "RetrainService": retrain_pb2_grpc.RetrainServiceStub,
}


def _credentials(tls: bool, root_certificates: bytes | None, client_cert: bytes | None,
                 client_key: bytes | None):
    if not (tls or root_certificates or client_cert):
        return None
    return grpc.ssl_channel_credentials(root_certificates=root_certificates, private_key=client_key,
                                        certificate_chain=client_cert)


class _Options:
    def __init__(self, target: str, token: str | None, timeout: float, retries: int, backoff: float,
                 max_backoff: float, max_message_bytes: int) -> None:
        self.target = target
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.channel_options = [("grpc.max_receive_message_length", max_message_bytes),
                                ("grpc.max_send_message_length", max_message_bytes)]

    def call_metadata(self, request: Any) -> tuple:
        """The call's metadata: the token, and the request_id as x-request-id so that the server's
        log lines of this call (and of its retries) carry the id the caller knows."""
        request_id = getattr(request, "request_id", "")
        return self.metadata + ((("x-request-id", request_id),) if request_id else ())

    def delay(self, attempt: int) -> float:
        base = min(self.max_backoff, self.backoff * (2 ** attempt))
        return base * (0.5 + random.random() / 2)


class AsyncClient(CallsMixin):
    """asyncio client: `async with AsyncClient("host:port") as c: await c.create_alert(...)`."""

    def __init__(self, target: str = DEFAULT_TARGET, *, token: str | None = None, tls: bool = False,
                 root_certificates: bytes | None = None, client_cert: bytes | None = None,
                 client_key: bytes | None = None, timeout: float = 10.0, retries: int = 5,
                 backoff: float = 0.1, max_backoff: float = 2.0, max_message_bytes: int = 4 * 1024 * 1024) -> None:
        self._opts = _Options(target, token, timeout, retries, backoff, max_backoff, max_message_bytes)
        creds = _credentials(tls, root_certificates, client_cert, client_key)
        self.channel = (grpc.aio.secure_channel(target, creds, options=self._opts.channel_options) if creds
                        else grpc.aio.insecure_channel(target, options=self._opts.channel_options))
        self._stubs = {name: cls(self.channel) for name, cls in _STUBS.items()}

    async def _invoke(self, service: str, method: str, request: Any, *, idempotent: bool = True):
        call = getattr(self._stubs[service], method)
        metadata = self._opts.call_metadata(request)
        attempt = 0
        while True:
            try:
                return await call(request, timeout=self._opts.timeout, metadata=metadata)
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RETRYABLE or not idempotent or attempt >= self._opts.retries:
                    raise
                await asyncio.sleep(self._opts.delay(attempt))
                attempt += 1

    def stream_alerts(self, requests: AsyncIterable[alert_pb2.CreateAlertRequest] | Iterable,
                      *, timeout: float | None = None) -> AsyncIterator[alert_pb2.Alert]:
        """High-rate ingest: one stored Alert back per request, in order. Not retried (a stream is
        not idempotent as a whole); resend the unanswered requests with their request_ids instead."""
        return self._stubs["AlertService"].StreamAlerts(requests, timeout=timeout, metadata=self._opts.metadata)

    async def watch_job(self, job_id: str) -> AsyncIterator[retrain_pb2.RetrainJob]:
        stream = self._stubs["RetrainService"].WatchJob(
            retrain_pb2.WatchJobRequest(job_id=str(job_id)), metadata=self._opts.metadata)
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
                 backoff: float = 0.1, max_backoff: float = 2.0, max_message_bytes: int = 4 * 1024 * 1024) -> None:
        self._opts = _Options(target, token, timeout, retries, backoff, max_backoff, max_message_bytes)
        creds = _credentials(tls, root_certificates, client_cert, client_key)
        self.channel = (grpc.secure_channel(target, creds, options=self._opts.channel_options) if creds
                        else grpc.insecure_channel(target, options=self._opts.channel_options))
        self._stubs = {name: cls(self.channel) for name, cls in _STUBS.items()}

    def _invoke(self, service: str, method: str, request: Any, *, idempotent: bool = True):
        call = getattr(self._stubs[service], method)
        metadata = self._opts.call_metadata(request)
        attempt = 0
        while True:
            try:
                return call(request, timeout=self._opts.timeout, metadata=metadata)
            except grpc.RpcError as exc:
                if exc.code() not in RETRYABLE or not idempotent or attempt >= self._opts.retries:
                    raise
                time.sleep(self._opts.delay(attempt))
                attempt += 1

    def stream_alerts(self, requests: Iterable[alert_pb2.CreateAlertRequest],
                      *, timeout: float | None = None) -> Iterator[alert_pb2.Alert]:
        return self._stubs["AlertService"].StreamAlerts(iter(requests), timeout=timeout, metadata=self._opts.metadata)

    def watch_job(self, job_id: str) -> Iterator[retrain_pb2.RetrainJob]:
        return self._stubs["RetrainService"].WatchJob(
            retrain_pb2.WatchJobRequest(job_id=str(job_id)), metadata=self._opts.metadata)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
