"""Composition root: build every part from Settings, start them in order, stop them in reverse.

    create_server(settings) -> (server, port)   # tests: listen on port 0, then server.stop()
    serve(settings)                              # the CLI: run until SIGTERM/SIGINT, SIGHUP reloads rules

Start: embedded PostgreSQL (when no URL) → pool → migrations → rules → executor → gRPC.
Stop: health NOT_SERVING → gRPC stop with a grace period (in-flight RPCs finish) → ingest drained →
background tasks → executor (claimed jobs return to the queue) → pool → embedded PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
import socket
import uuid

import asyncpg
import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from closedloop.v1 import (
    alert_pb2, alert_pb2_grpc, monitor_pb2, monitor_pb2_grpc, retrain_pb2, retrain_pb2_grpc, rules_pb2, rules_pb2_grpc,
)

from .api.alerts import AlertServicer
from .api.auth import Authenticator, load_tokens
from .api.interceptors import ServerInterceptor
from .api.monitor import MonitorServicer
from .api.retrain import RetrainServicer
from .api.rules import RuleServicer
from .config import Settings
from .db.embedded import EmbeddedPostgres
from .db.migrations import migrate
from .db.pool import create_pool
from .errors import ConfigError
from .loop.age_sweep import AgeSweep
from .loop.model_cache import ModelFactsCache
from .loop.ingest import AlertIngestor
from .logging_setup import configure_logging
from .loop.rule_engine import RuleEngine
from .http.prometheus import MetricsEndpoint
from .store.models import MODELS_CHANGED_CHANNEL
from .store.rules import RULES_CHANGED_CHANNEL

log = structlog.get_logger(__name__)

SERVICE_NAMES = [
    alert_pb2.DESCRIPTOR.services_by_name["AlertService"].full_name,
    rules_pb2.DESCRIPTOR.services_by_name["RuleService"].full_name,
    retrain_pb2.DESCRIPTOR.services_by_name["RetrainService"].full_name,
    monitor_pb2.DESCRIPTOR.services_by_name["MonitorService"].full_name,
]


def _is_loopback(listen: str) -> bool:
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ClosedLoopServer:
    """The running service: the gRPC server plus everything it stands on."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.grpc: grpc.aio.Server | None = None
        self.port = 0
        self.database_url = settings.database_url
        self.embedded: EmbeddedPostgres | None = None
        self.pool: asyncpg.Pool | None = None
        self.health = health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
        self.rules: RuleEngine | None = None
        self.facts: ModelFactsCache | None = None
        self.ingestor: AlertIngestor | None = None
        self.monitor: MonitorServicer | None = None
        self.runner = None  # executor.runner.JobRunner when this process runs workers
        self._listener: asyncpg.Connection | None = None
        self._tasks: list = []
        self._stopped = asyncio.Event()

    async def start(self) -> int:
        s = self.settings
        configure_logging(s.log_format, s.log_level)
        if not s.auth_enabled and not _is_loopback(s.listen):
            raise ConfigError(f"--listen {s.listen} is not a loopback address: configure --auth-tokens "
                              "first (without auth closedloop only listens on loopback)")
        authenticator = Authenticator(load_tokens(s.auth_tokens)) if s.auth_tokens else None
        try:
            if self.database_url is None:
                self.embedded = EmbeddedPostgres(s.data_dir)
                self.database_url = await self.embedded.start()
            self.pool = await create_pool(self.database_url, connect_timeout=s.connect_timeout)
            async with self.pool.acquire() as conn:
                report = await migrate(conn)
            log.info("db.ready", applied=report.applied, timescale=report.timescale)
            self.facts = ModelFactsCache(self.pool)
            self.rules = RuleEngine(self.pool, s.rules)
            await self.rules.load_at_start()
            self.ingestor = AlertIngestor(self.pool, self.rules, self.facts, job_max_attempts=s.job_max_attempts,
                                          job_timeout_s=s.job_timeout)
            await self.ingestor.start()
            # Stopped with the background tasks, before the ingestor: its last flush may raise alerts.
            self.monitor = MonitorServicer(self.pool, self.ingestor, f"{socket.gethostname()}:{os.getpid()}:"
                                           f"{uuid.uuid4().hex[:8]}")
            self._tasks.append(self.monitor)
            await self._listen_for_changes()
            if s.run_workers and s.workers > 0:
                # Imported here so ingest-only processes never load the training stack.
                from .executor.runner import JobRunner

                self.runner = JobRunner(s, self.pool, self.database_url)
                await self.runner.start()
            self._start_grpc(authenticator)
            await self.grpc.start()
            if s.age_sweep_interval > 0:
                self._tasks.append(AgeSweep(self.pool, self.rules, self.ingestor, s.age_sweep_interval))
            if s.metrics_listen:
                self._tasks.append(MetricsEndpoint(s.metrics_listen, self))
            for task in self._tasks:
                await task.start()
        except BaseException:
            await self._teardown()
            raise
        for name in ["", *SERVICE_NAMES]:
            await self._set_health(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("server.started", listen=s.listen, port=self.port, executor=s.executor,
                 workers=s.workers if s.run_workers else 0, auth="tokens" if authenticator else "off (loopback only)",
                 tls="mutual" if s.tls_client_ca else ("on" if s.tls_cert else "off"),
                 database="embedded" if self.embedded else "external")
        return self.port

    def _start_grpc(self, authenticator) -> None:
        s = self.settings
        options = [("grpc.max_receive_message_length", s.max_message_bytes),
                   ("grpc.max_send_message_length", s.max_message_bytes),
                   ("grpc.so_reuseport", 0)]
        self.grpc = grpc.aio.server(interceptors=[ServerInterceptor(authenticator)], options=options,
                                    maximum_concurrent_rpcs=s.max_concurrent_rpcs)
        alert_pb2_grpc.add_AlertServiceServicer_to_server(AlertServicer(self.pool, self.ingestor), self.grpc)
        rules_pb2_grpc.add_RuleServiceServicer_to_server(RuleServicer(self.pool, self.rules, self.facts), self.grpc)
        retrain_pb2_grpc.add_RetrainServiceServicer_to_server(
            RetrainServicer(self.pool, s, self.facts, self.rules), self.grpc)
        monitor_pb2_grpc.add_MonitorServiceServicer_to_server(self.monitor, self.grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        reflection.enable_server_reflection([*SERVICE_NAMES, reflection.SERVICE_NAME, health.SERVICE_NAME], self.grpc)
        if s.tls_cert:
            ca = s.tls_client_ca.read_bytes() if s.tls_client_ca else None
            creds = grpc.ssl_server_credentials([(s.tls_key.read_bytes(), s.tls_cert.read_bytes())],
                                                root_certificates=ca, require_client_auth=ca is not None)
            self.port = self.grpc.add_secure_port(s.listen, creds)
        else:
            self.port = self.grpc.add_insecure_port(s.listen)
        if self.port == 0:
            raise ConfigError(f"cannot listen on {s.listen}")

    async def _set_health(self, name: str, status) -> None:
        result = self.health.set(name, status)
        if asyncio.iscoroutine(result):
            await result

    async def _listen_for_changes(self) -> None:
        """Other replicas announce rule and model changes through NOTIFY; adopt them here."""
        self._listener = await asyncpg.connect(self.database_url)

        def on_models(_conn, _pid, _channel, model_id: str) -> None:
            self.facts.invalidate(model_id or None)
            self.monitor.invalidate(model_id or None)

        def on_rules(_conn, _pid, _channel, _payload) -> None:
            asyncio.get_running_loop().create_task(self.rules.refresh_from_database())

        await self._listener.add_listener(MODELS_CHANGED_CHANNEL, on_models)
        await self._listener.add_listener(RULES_CHANGED_CHANNEL, on_rules)

    async def reload_rules(self) -> None:
        await self.rules.reload_from_file()

    async def stop(self, grace: float | None = None) -> None:
        if self._stopped.is_set():
            return
        grace = self.settings.shutdown_grace if grace is None else grace
        log.info("server.stopping", grace_s=grace)
        for name in ["", *SERVICE_NAMES]:
            await self._set_health(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        if self.grpc is not None:
            await self.grpc.stop(grace)
        await self._teardown()
        self._stopped.set()
        log.info("server.stopped")

    async def _teardown(self) -> None:
        for task in reversed(self._tasks):
            with contextlib.suppress(Exception):
                await task.stop()
        self._tasks.clear()
        if self.ingestor is not None:
            await self.ingestor.stop()
        if self.runner is not None:
            await self.runner.stop()
            self.runner = None
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None
        if self.pool is not None:
            await self.pool.close()
            self.pool = None
        if self.embedded is not None:
            await self.embedded.stop()
            self.embedded = None


async def create_server(settings: Settings) -> tuple[ClosedLoopServer, int]:
    """Build and start everything; returns the running server and the port it bound."""
    server = ClosedLoopServer(settings)
    port = await server.start()
    return server, port


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT; SIGHUP re-reads --rules (keeping the old set if the new one fails)."""
    server, _ = await create_server(settings)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGINT, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(server.reload_rules()))
    try:
        await stopping.wait()
    finally:
        await server.stop()
