"""Notifications that arrive: a real server delivers to a real local HTTP receiver (aiohttp on
127.0.0.1:0) that fails the first attempts of each notification and then accepts.

The receiver counts raw attempts and keeps one accepted delivery per idempotency key, as a real
receiver would; every test checks that each notification was accepted exactly once.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import io
import json
import sys

import grpc
import pytest
import structlog
from aiohttp import web

from closedloop.server.app import create_server
from closedloop.server.cli import main as cli_main
from closedloop.server.config import NotifySettings, NotifyTarget
from closedloop.v1 import notify_pb2
from closedloop import AsyncClient

from .conftest import make_settings

HOOK_SECRET = "hook-shared-secret-8f1c2a"
PD_ROUTING_KEY = "pd-routing-key-77aa19"
SLACK_TOKEN_PATH = "/services/T000/B000/slack-token-5e6d"


class Receiver:
    """An HTTP receiver that answers `fail_first` attempts of each idempotency key with 503."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.failure_status = 503
        self.attempts: collections.Counter[str] = collections.Counter()
        self.accepted: dict[str, tuple[dict, dict]] = {}  # key -> (headers, body); one per key
        self.accepted_twice: list[str] = []
        self.runner: web.AppRunner | None = None
        self.base = ""

    async def handle(self, request: web.Request) -> web.Response:
        key = request.headers.get("Idempotency-Key", "")
        raw = await request.read()
        self.attempts[key] += 1
        if self.attempts[key] <= self.fail_first:
            return web.Response(status=self.failure_status, text="not now")
        if key in self.accepted:
            self.accepted_twice.append(key)
        else:
            self.accepted[key] = (dict(request.headers), {"path": request.path, "raw": raw, "json": json.loads(raw)})
        return web.json_response({"ok": True}, status=202)

    async def start(self) -> "Receiver":
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        return self

    async def stop(self) -> None:
        await self.runner.cleanup()


@pytest.fixture
async def receiver():
    r = await Receiver(fail_first=2).start()
    yield r
    await r.stop()


def notify_settings(base: str, **target_options) -> NotifySettings:
    fast = dict(backoff_initial=0.05, backoff_max=0.2, timeout=5.0, **target_options)
    return NotifySettings(targets={
        "hook": NotifyTarget("hook", "webhook", f"{base}/hook", HOOK_SECRET, **fast),
        "slack_quants": NotifyTarget("slack_quants", "slack", f"{base}{SLACK_TOKEN_PATH}", **fast),
        "pagerduty_fx": NotifyTarget("pagerduty_fx", "pagerduty", f"{base}/v2/enqueue", PD_ROUTING_KEY, **fast),
    }, on_retrain_failed="slack_quants", poll_interval=0.05)


@pytest.fixture
async def notifying(database_url, tmp_path, receiver):
    """A server with the three targets, workers on (0 training processes), logging at debug into
    `client.log` (structlog's own output, JSON lines)."""
    settings = make_settings(database_url, tmp_path, run_workers=True, workers=0, log_level="debug",
                             notify=notify_settings(receiver.base, max_attempts=4))
    srv, port = await create_server(settings)
    log = io.StringIO()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=log))
    try:
        async with AsyncClient(f"127.0.0.1:{port}", timeout=15.0, retries=2) as c:
            c.test_target, c.log = f"127.0.0.1:{port}", log
            yield c
    finally:
        await srv.stop(grace=1.0)
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))


RULES = """
rule page_fx:
    when type == "drift" and metrics.drift_score > 0.5
    then record, notify pagerduty_fx, notify hook
rule tell_quants:
    when type == "drift"
    then notify slack_quants
"""


async def wait_for(predicate, what: str, timeout: float = 30.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def notifications(client, state=None) -> list[notify_pb2.Notification]:
    return list((await client.list_notifications(state=state, page_size=1000)).notifications)


async def all_delivered(client, count: int):
    rows = await notifications(client)
    return rows if len(rows) == count and all(n.state == notify_pb2.NOTIFICATION_STATE_DELIVERED for n in rows) else None


def assert_no_secret(text: str) -> None:
    for secret in (HOOK_SECRET, PD_ROUTING_KEY, SLACK_TOKEN_PATH, "slack-token-5e6d"):
        assert secret not in text


async def test_each_notification_is_accepted_exactly_once_after_failed_attempts(notifying, receiver):
    await notifying.apply_rules(RULES, "notify.rules")
    alerts = [await notifying.create_alert("m1", "drift", "high", metrics={"drift_score": 0.8}, request_id=f"r{i}")
              for i in range(3)]
    # A client retry of the same request stores nothing twice, so it notifies nothing twice.
    await notifying.create_alert("m1", "drift", "high", metrics={"drift_score": 0.8}, request_id="r0")
    rows = await wait_for(lambda: all_delivered(notifying, 9), "9 delivered notifications")

    assert len(receiver.accepted) == 9 and receiver.accepted_twice == []
    assert all(n == 3 for n in receiver.attempts.values())  # two refusals, then accepted, then nothing
    assert {(n.target, n.attempts) for n in rows} == {("hook", 3), ("slack_quants", 3), ("pagerduty_fx", 3)}
    assert {n.alert_id for n in rows} == {a.id for a in alerts}

    hooks = [(h, b) for h, b in receiver.accepted.values() if b["path"] == "/hook"]
    assert len(hooks) == 3
    for headers, body in hooks:
        expected = "sha256=" + hmac.new(HOOK_SECRET.encode(), body["raw"], hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Closedloop-Signature"], expected)
        doc = body["json"]
        assert doc["version"] == 1 and doc["event"] == "alert.matched" and doc["rule"] == "page_fx"
        assert doc["idempotency_key"] == headers["Idempotency-Key"]
        assert doc["alert"]["metrics"] == {"drift_score": 0.8} and doc["alert"]["severity"] == "high"
        assert {d["rule"] for d in doc["decisions"]} == {"page_fx", "tell_quants"}

    [slack] = [b["json"] for h, b in receiver.accepted.values() if b["path"] == SLACK_TOKEN_PATH][:1]
    assert "matched rule tell_quants" in slack["text"] and "http" not in json.dumps(slack["blocks"])
    assert slack["blocks"][-1]["elements"][0]["text"].endswith("-tell_quants-slack_quants")  # the key

    pages = [b["json"] for h, b in receiver.accepted.values() if b["path"] == "/v2/enqueue"]
    assert {p["event_action"] for p in pages} == {"trigger"} and {p["dedup_key"] for p in pages} == {"closedloop/m1/page_fx"}
    assert all(p["routing_key"] == PD_ROUTING_KEY and p["payload"]["severity"] == "error" for p in pages)

    listed = await notifications(notifying)
    logged = notifying.log.getvalue()
    assert "notify.retry" in logged and "notify.delivered" in logged
    assert_no_secret(str(listed) + logged)


async def test_pagerduty_resolves_when_the_alert_is_resolved(notifying, receiver):
    await notifying.apply_rules(RULES, "notify.rules")
    alert = await notifying.create_alert("fx-eur", "drift", "critical", metrics={"drift_score": 0.9})
    await wait_for(lambda: all_delivered(notifying, 3), "the alert's notifications")
    await notifying.update_alert_state(alert.id, "RESOLVED")
    await notifying.update_alert_state(alert.id, "RESOLVED")  # idempotent: resolves once
    rows = await wait_for(lambda: all_delivered(notifying, 6), "the resolve notifications")
    assert sorted(n.event for n in rows) == ["alert.matched"] * 3 + ["alert.resolved"] * 3
    resolves = [b["json"] for h, b in receiver.accepted.values()
                if b["path"] == "/v2/enqueue" and b["json"]["event_action"] == "resolve"]
    assert resolves == [{"routing_key": PD_ROUTING_KEY, "event_action": "resolve",
                         "dedup_key": "closedloop/fx-eur/page_fx"}]
    assert receiver.accepted_twice == []


async def test_dead_letter_after_the_limit_then_retry_delivers(notifying, receiver, capsys):
    receiver.fail_first = 10**6  # the receiver is down
    await notifying.apply_rules("rule r: when true then notify hook\n", "r.rules")
    await notifying.create_alert("m2", "drift", "low")
    dead = await wait_for(lambda: notifications(notifying, "DEAD"), "a dead letter")
    [n] = dead
    assert (n.attempts, n.last_status, n.last_error) == (4, 503, "HTTP 503")
    assert sum(receiver.attempts.values()) == 4 and receiver.accepted == {}

    receiver.fail_first = 0  # back up: the operator resends it with the CLI
    code = await asyncio.to_thread(cli_main, ["notifications", "retry", n.id, "--target", notifying.test_target])
    assert code == 0
    [again] = await wait_for(lambda: all_delivered(notifying, 1), "the retried delivery")
    assert again.attempts == 1 and len(receiver.accepted) == 1
    code = await asyncio.to_thread(cli_main, ["notifications", "list", "--target", notifying.test_target])
    out = capsys.readouterr()
    assert code == 0 and "delivered" in out.out and "hook" in out.out
    assert "notify.dead_lettered" in notifying.log.getvalue()
    assert_no_secret(out.out + out.err + notifying.log.getvalue())


async def test_a_refused_request_is_dead_at_once(notifying, receiver):
    receiver.fail_first, receiver.failure_status = 10**6, 400  # sending it again would not help
    await notifying.apply_rules("rule r: when true then notify hook\n", "r.rules")
    await notifying.create_alert("m3", "drift", "low")
    [n] = await wait_for(lambda: notifications(notifying, "DEAD"), "a dead letter")
    assert n.attempts == 1 and "not retried" in n.last_error and sum(receiver.attempts.values()) == 1


async def test_unknown_target_is_an_invalid_argument_naming_it(notifying):
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await notifying.apply_rules("rule r: when true then notify pagerduty_f\n", "r.rules")
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown notification target 'pagerduty_f'; did you mean 'pagerduty_fx'?" in exc.value.details()
    ruleset = await notifying.apply_rules("rule r: when true then notify pagerduty_fx\n", "r.rules")
    assert ruleset.rules[0].actions[0].target == "pagerduty_fx"


async def test_notification_rpcs_validate(notifying):
    for call, field in ((notifying.retry_notification("x1"), "id"),
                        (notifying.list_notifications(page_size=-1), "page_size")):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in exc.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await notifying.retry_notification("424242")
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
