"""The Prometheus exporter: a tiny text endpoint (--metrics-listen) with ingest and queue figures.

Figures come from the database (store/stats.py) rather than process counters, so every replica
reports the same truth and a restart loses nothing.
"""

from __future__ import annotations

import asyncio

import structlog

from ..store import stats

log = structlog.get_logger(__name__)

class MetricsEndpoint:
    def __init__(self, listen: str, server) -> None:
        self.host, port = listen.rsplit(":", 1)
        self.port = int(port)
        self.server = server
        self._http: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._http = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._http.sockets[0].getsockname()[1]
        log.info("metrics.listening", host=self.host, port=self.port)

    async def stop(self) -> None:
        if self._http is not None:
            self._http.close()
            await self._http.wait_closed()

    async def render(self) -> str:
        async with self.server.pool.acquire() as conn:
            counts = await stats.service_counts(conn)
        lines = []
        for key, value in counts.items():
            kind = "counter" if key.endswith("_total") or key in ("jobs_succeeded", "jobs_failed") else "gauge"
            lines += [f"# TYPE closedloop_{key} {kind}", f"closedloop_{key} {value}"]
        active = self.server.rules.active if self.server.rules else None
        lines += ["# TYPE closedloop_rule_set_version gauge", f"closedloop_rule_set_version {active.version if active else 0}"]
        return "\n".join(lines) + "\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            body = (await self.render()).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
            await writer.drain()
        except Exception as exc:  # noqa: BLE001 - a bad scrape must not hurt the server
            log.warning("metrics.scrape_failed", error=str(exc))
        finally:
            writer.close()
