"""Composition root: build every part from Settings, start them in order, stop them in reverse.

    create_server(settings) -> (server, port)   # tests: listen on port 0, then server.stop()
    serve(settings)                              # the CLI: run until SIGTERM/SIGINT, SIGHUP reloads rules

Start: embedded PostgreSQL (when no URL) → pool → migrations → rules → database watch → executor → gRPC →
background tasks (age sweep, the HTTP side, notification delivery).
Stop: health NOT_SERVING → drain (still answering, so load balancers notice) → gRPC stop with a grace
period (in-flight RPCs finish) → background tasks (the HTTP side) → ingest drained → executor (claimed
jobs return to the queue) → database watch → pool → embedded PostgreSQL.
Health is SERVING only while started, not draining, and the database answers (db/listener.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import os
import signal
import socket
import uuid

import asyncpg
import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from closedloop.v1 import (alert_pb2, alert_pb2_grpc, monitor_pb2, monitor_pb2_grpc, notify_pb2, notify_pb2_grpc,
                           retrain_pb2, retrain_pb2_grpc, rules_pb2, rules_pb2_grpc)

from .api.alerts import AlertServicer
from .api.audit import Auditor
from .api.auth import Authenticator, load_tokens
from .api.interceptors import WrappedHandlers
from .api.monitor import MonitorServicer
from .api.notifications import NotificationServicer
from .api.retrain import RetrainServicer
from .api.rules import RuleServicer
from .config import Settings
from .db.embedded import EmbeddedPostgres
from .db.listener import DatabaseWatch
from .db.migrations import migrate
from .db.pool import create_pool
from .errors import ConfigError
from .feedback.rollup import feedback_rollup_task
from .loop.age_sweep import AgeSweep
from .loop.model_cache import FactsRefresher, ModelFactsCache
from .loop.ingest import AlertIngestor
from .logging_setup import configure_logging
from .loop.rule_engine import RuleEngine
from .http.server import HttpSide
from .notify.worker import DeliveryWorker
from .store.console_hourly import console_rollup_task
from .store.models import MODELS_CHANGED_CHANNEL
from .store.partitions import PartitionMaintenance
from .store.rules import RULES_CHANGED_CHANNEL

log = structlog.get_logger(__name__)

# How often the database watch checks that the database answers (health follows within this).
HEALTH_PROBE_INTERVAL_S = 1.0

SERVICE_NAMES = [
    alert_pb2.DESCRIPTOR.services_by_name["AlertService"].full_name,
    rules_pb2.DESCRIPTOR.services_by_name["RuleService"].full_name,
    retrain_pb2.DESCRIPTOR.services_by_name["RetrainService"].full_name,
    notify_pb2.DESCRIPTOR.services_by_name["NotificationService"].full_name,
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


def check_exposure(s: Settings) -> None:
    """Refuse to put secrets or unauthenticated calls on the network by accident (README, Security).

    Off loopback, gRPC and the HTTP side (which ingests alerts too) need bearer tokens, and those
    tokens need TLS unless the operator says --allow-insecure (e.g. TLS ends at a sidecar on the host)."""
    for flag, address in (("--listen", s.listen), ("--http-listen", s.http_address)):
        if not address or _is_loopback(address):
            continue
        if not s.auth_enabled:
            raise ConfigError(f"{flag} {address} is not a loopback address: configure --auth-tokens first "
                              "(without auth closedloop only listens on loopback)")
        if s.tls_cert is None and not s.allow_insecure:
            raise ConfigError(f"{flag} {address} is not a loopback address and TLS is off: bearer tokens would "
                              "cross the network in clear text; configure --tls-cert/--tls-key, or pass "
                              "--allow-insecure if TLS is terminated in front of closedloop")


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
        self.watch: DatabaseWatch | None = None
        self.notifier: DeliveryWorker | None = None  # when this process runs workers and targets exist
        self.http: HttpSide | None = None  # with --http-listen; .port is the bound port
        self.serving_status = "NOT_SERVING"  # the "" service's gRPC health, mirrored by /healthz
        self._tasks: list = []
        self._background: set[asyncio.Task] = set()
        self._started = False
        self._draining = False
        self._stopped = asyncio.Event()

    async def start(self) -> int:
        s = self.settings
        configure_logging(s.log_format, s.log_level)
        check_exposure(s)
        authenticator = Authenticator(load_tokens(s.auth_tokens)) if s.auth_tokens else None
        try:
            if self.database_url is None:
                self.embedded = EmbeddedPostgres(s.data_dir)
                self.database_url = await self.embedded.start()
            self.pool = await create_pool(self.database_url, connect_timeout=s.connect_timeout,
                                          wait_timeout=s.db_timeout)
            # Migrations may wait for another replica's migrations (an advisory lock) and run long DDL:
            # a connection of their own, without the per-command bound of the pool.
            conn = await asyncpg.connect(self.database_url, timeout=s.connect_timeout)
            try:
                report = await migrate(conn)
            finally:
                await conn.close()
            log.info("db.ready", applied=report.applied, timescale=report.timescale)
            self.facts = ModelFactsCache(self.pool)
            self.rules = RuleEngine(self.pool, s.rules, s.notify.target_names)
            await self.rules.load_at_start()
            self.ingestor = AlertIngestor(self.pool, self.rules, self.facts, job_max_attempts=s.job_max_attempts,
                                          job_timeout_s=s.job_timeout, wait_timeout=s.db_timeout, notify=s.notify)
            await self.ingestor.start()
            # Stopped with the background tasks, before the ingestor: its last flush may raise alerts.
            self.monitor = MonitorServicer(self.pool, self.ingestor, f"{socket.gethostname()}:{os.getpid()}:"
                                           f"{uuid.uuid4().hex[:8]}")
            self._tasks.append(self.monitor)
            self._tasks.append(FactsRefresher(self.facts))
            await self._watch_database()
            if s.run_workers and s.workers > 0:
                # Imported here so ingest-only processes never load the training stack.
                from .executor.runner import JobRunner

                self.runner = JobRunner(s, self.pool, self.database_url)
                await self.runner.start()
            if s.run_workers and s.notify.targets:
                self.notifier = DeliveryWorker(self.pool, s.notify)
            self._start_grpc(authenticator)
            await self.grpc.start()
            # Every server keeps months ahead (and applies --retention); replicas take turns by a lock.
            self._tasks.append(PartitionMaintenance(self.pool, s.retention_period))
            # The console's hourly counts: on every server (any may serve the console), one at a time.
            self._tasks.append(console_rollup_task(self.pool))
            if s.age_sweep_interval > 0:
                self._tasks.append(AgeSweep(self.pool, self.rules, self.ingestor, s.age_sweep_interval))
            if s.http_address:
                self.http = HttpSide(s.http_address, self, authenticator)
                self._tasks.append(self.http)
            if self.notifier is not None:
                self._tasks.append(self.notifier)
            if s.run_workers:
                # Background work, like the jobs: ingest-only replicas leave the roll-up to the others.
                self._tasks.append(feedback_rollup_task(self.pool))
            for task in self._tasks:
                await task.start()
        except BaseException:
            await self._teardown()
            raise
        self._started = True
        await self._update_health()
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
        self.grpc = grpc.aio.server(options=options, maximum_concurrent_rpcs=s.max_concurrent_rpcs)
        handlers = WrappedHandlers(authenticator, Auditor(self.pool))
        handlers.add(alert_pb2_grpc.add_AlertServiceServicer_to_server, AlertServicer(self.pool, self.ingestor))
        handlers.add(rules_pb2_grpc.add_RuleServiceServicer_to_server, RuleServicer(self.pool, self.rules, self.facts))
        handlers.add(retrain_pb2_grpc.add_RetrainServiceServicer_to_server,
                     RetrainServicer(self.pool, s, self.facts, self.rules))
        handlers.add(notify_pb2_grpc.add_NotificationServiceServicer_to_server,
                     NotificationServicer(self.pool, self.notifier.wake if self.notifier else None))
        handlers.add(monitor_pb2_grpc.add_MonitorServiceServicer_to_server, self.monitor)
        handlers.add(health_pb2_grpc.add_HealthServicer_to_server, self.health)
        handlers.add(reflection_pb2_grpc.add_ServerReflectionServicer_to_server,
                     reflection.aio.ReflectionServicer([*SERVICE_NAMES, reflection.SERVICE_NAME, health.SERVICE_NAME]))
        handlers.install(self.grpc)
        if s.tls_cert:
            ca = s.tls_client_ca.read_bytes() if s.tls_client_ca else None
            creds = grpc.ssl_server_credentials([(s.tls_key.read_bytes(), s.tls_cert.read_bytes())],
                                                root_certificates=ca, require_client_auth=ca is not None)
            self.port = self.grpc.add_secure_port(s.listen, creds)
        else:
            self.port = self.grpc.add_insecure_port(s.listen)
        if self.port == 0:
            raise ConfigError(f"cannot listen on {s.listen}")

    async def _update_health(self) -> None:
        """SERVING while started, not draining and the database answers; NOT_SERVING otherwise."""
        serving = self._started and not self._draining and (self.watch is None or self.watch.reachable)
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        self.serving_status = health_pb2.HealthCheckResponse.ServingStatus.Name(status)  # for /healthz
        for name in ["", *SERVICE_NAMES]:
            result = self.health.set(name, status)
            if asyncio.iscoroutine(result):
                await result

    async def _watch_database(self) -> None:
        """Other replicas announce rule and model changes through NOTIFY; adopt them here. The same
        connection tells health whether the database answers."""

        def on_models(model_id: str) -> None:
            self.facts.invalidate(model_id or None)
            self.monitor.invalidate(model_id or None)

        def on_rules(_payload: str) -> None:
            task = asyncio.get_running_loop().create_task(self.rules.refresh_from_database())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

        async def on_reconnect() -> None:
            self.pool.unreachable = False
            # What a NOTIFY missed while nobody listened could have said: re-read all of it.
            self.facts.invalidate(None)
            await self.rules.refresh_from_database()

        async def on_reachable(reachable: bool) -> None:
            log.warning("db.reachable" if reachable else "db.unreachable_not_serving")
            self.pool.unreachable = not reachable  # calls fail fast instead of each waiting out --db-timeout
            await self._update_health()

        self.watch = DatabaseWatch(self.database_url, {MODELS_CHANGED_CHANNEL: on_models, RULES_CHANGED_CHANNEL: on_rules},
                                   on_reconnect=on_reconnect, on_reachable=on_reachable,
                                   interval=HEALTH_PROBE_INTERVAL_S, timeout=self.settings.db_timeout)
        await self.watch.start()

    async def reload_rules(self) -> None:
        await self.rules.reload_from_file()

    async def stop(self, grace: float | None = None, drain: float = 0.0) -> None:
        """Health NOT_SERVING, keep answering for `drain` seconds so load balancers move away (serve()
        passes --drain on SIGTERM), then stop accepting calls and give those in flight `grace` seconds
        (default --shutdown-grace)."""
        if self._stopped.is_set():
            return
        grace = self.settings.shutdown_grace if grace is None else grace
        log.info("server.stopping", drain_s=drain, grace_s=grace)
        self._draining = True
        await self._update_health()
        if drain > 0 and self.grpc is not None:
            await asyncio.sleep(drain)
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
        if self.watch is not None:
            await self.watch.stop()
            self.watch = None
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.pool is not None:
            try:  # a graceful close needs the database to answer; a hung one must not hold the stop
                await asyncio.wait_for(self.pool.close(), self.settings.db_timeout)
            except asyncio.TimeoutError:
                self.pool.terminate()
            self.pool = None
        if self.embedded is not None:
            await self.embedded.stop()
            self.embedded = None


async def create_server(settings: Settings) -> tuple[ClosedLoopServer, int]:
    """Build and start everything; returns the running server and the port it bound."""
    server = ClosedLoopServer(settings)
    port = await server.start()
    return server, port


def settle_collector() -> None:
    """Move everything alive after start-up out of the garbage collector's sight (gc.freeze).

    A full (generation 2) collection walks every tracked object: with the start-up heap (gRPC,
    protobuf descriptors, asyncpg, the compiled rules) one took ~100 ms on the benchmark machine and
    stalled every request in flight (bench/README.md, loop). Frozen objects are never scanned, so a
    full collection only walks what was allocated since. Called once by `serve()` after start-up, not
    by `create_server()`: a process starting many servers (the tests) would freeze each one's garbage.
    """
    gc.collect()
    gc.freeze()


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then drain and stop; SIGHUP re-reads --rules (keeping the old set if
    the new one fails)."""
    server, _ = await create_server(settings)
    settle_collector()
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGINT, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(server.reload_rules()))
    try:
        await stopping.wait()
    finally:
        await server.stop(drain=settings.drain)
