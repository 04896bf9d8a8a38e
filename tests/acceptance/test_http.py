"""The HTTP side on a real server: JSON alerts, the Alertmanager receiver, health, /metrics, auth."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from closedloop.server.api.auth import new_token_line
from closedloop.v1 import alert_pb2
from closedloop.server.app import create_server
from closedloop.server.errors import ConfigError
from closedloop.server.store import stats

from .conftest import make_settings
from .helpers import synthetic_model


@pytest.fixture
def server_settings(database_url, tmp_path):
    return make_settings(database_url, tmp_path, http_listen="127.0.0.1:0")


@pytest.fixture
async def http(server):
    async with aiohttp.ClientSession(f"http://127.0.0.1:{server.http.port}") as session:
        yield session


async def stored_alerts(server) -> int:
    async with server.pool.acquire() as conn:
        return await conn.fetchval("SELECT count(*) FROM monitoring_alert_triggers")


def am_alert(fingerprint="fp1", status="firing", starts="2026-01-02T03:04:05.123Z", **labels):
    labels = {"alertname": "ModelDrift", "model_id": "fx-am", "type": "drift", "severity": "warning", **labels}
    return {"status": status, "labels": labels, "annotations": {"value": "0.4", "summary": "drift"},
            "startsAt": starts, "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom/graph",
            "fingerprint": fingerprint}


def am_payload(*alerts, status="firing"):
    return {"version": "4", "groupKey": "{}:{alertname=\"ModelDrift\"}", "truncatedAlerts": 0, "status": status,
            "receiver": "closedloop", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://am", "alerts": list(alerts)}


async def test_json_create_get_and_idempotency(client, server, http):
    await client.register_model(synthetic_model("fx-json"))
    body = {"alert": {"modelId": "fx-json", "type": "drift", "severity": "SEVERITY_HIGH",
                      "metrics": {"drift_score": 0.4}, "labels": {"desk": "fx"}}, "requestId": "json-1"}
    async with http.post("/v1/alerts", json=body) as r:
        assert r.status == 200, await r.text()
        created = await r.json()
    assert created["state"] == "ALERT_STATE_ACTIONED"
    assert [(a["rule"], a["state"]) for a in created["actions"]] == [("drift_auto_retrain", "ACTION_STATE_QUEUED")]
    async with http.post("/v1/alerts", json=body) as r:  # a retry: the stored alert, nothing new
        assert r.status == 200 and (await r.json())["id"] == created["id"]
    assert await stored_alerts(server) == 1
    async with http.get(f"/v1/alerts/{created['id']}") as r:
        assert r.status == 200 and await r.json() == created
    grpc_view = await client.get_alert(created["id"])
    assert grpc_view.id == created["id"] and dict(grpc_view.labels) == {"desk": "fx"}

    body["alert"]["metrics"] = {"drift_score": 0.9}  # same request_id, different alert
    async with http.post("/v1/alerts", json=body) as r:
        assert r.status == 409 and (await r.json())["error"]["status"] == "ALREADY_EXISTS"
    async with http.get("/v1/alerts/999999") as r:
        assert r.status == 404 and (await r.json())["error"]["status"] == "NOT_FOUND"


async def test_json_errors_carry_field_violations(http, server):
    async with http.post("/v1/alerts", json={"alert": {"type": "drift", "metrics": {"x": "NaN"}}}) as r:
        assert r.status == 400
        error = (await r.json())["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    [bad] = error["details"]
    assert bad["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    fields = {v["field"] for v in bad["fieldViolations"]}
    assert {"alert.model_id", "alert.severity", "alert.metrics['x']"} <= fields, fields
    async with http.post("/v1/alerts", data="{not json") as r:
        assert r.status == 400
        assert (await r.json())["error"]["details"][0]["fieldViolations"][0]["field"] == "body"
    async with http.post("/v1/alerts", json={"alert": {"modelId": "m", "nope": 1}}) as r:
        assert r.status == 400 and "nope" in (await r.json())["error"]["message"]
    async with http.get("/v1/alerts/abc") as r:
        assert r.status == 400 and (await r.json())["error"]["details"][0]["fieldViolations"][0]["field"] == "id"
    assert await stored_alerts(server) == 0


async def test_alertmanager_firing_repeat_and_resolve(client, server, http):
    await client.register_model(synthetic_model("fx-am"))
    async with http.post("/api/v1/alertmanager", json=am_payload(am_alert())) as r:
        assert r.status == 200, await r.text()
        [first] = (await r.json())["alerts"]
    assert first["outcome"] == "created" and first["actions"] == [{"rule": "drift_auto_retrain", "decision": "QUEUED"}]
    stored = await client.get_alert(first["alert_id"])
    assert stored.model_id == "fx-am" and stored.type == "drift" and stored.severity == 2  # warning -> medium
    assert dict(stored.metrics) == {"drift_score": 0.4} and stored.source == "alertmanager"
    assert dict(stored.labels) == {"alertname": "ModelDrift"}
    assert stored.observe_time.ToJsonString() == "2026-01-02T03:04:05.123Z"

    # Alertmanager repeats a firing alert (repeat_interval) and retries failed posts; the value moves.
    repeat = am_alert()
    repeat["annotations"]["value"] = "0.5"
    async with http.post("/api/v1/alertmanager", json=am_payload(repeat)) as r:
        [again] = (await r.json())["alerts"]
    assert again["outcome"] == "duplicate" and again["alert_id"] == first["alert_id"]
    assert await stored_alerts(server) == 1

    async with http.post("/api/v1/alertmanager", json=am_payload(am_alert(status="resolved"), status="resolved")) as r:
        assert r.status == 200
        [done] = (await r.json())["alerts"]
    assert done["outcome"] == "resolved"
    assert (await client.get_alert(first["alert_id"])).state == alert_pb2.ALERT_STATE_RESOLVED
    async with http.post("/api/v1/alertmanager", json=am_payload(am_alert("never", status="resolved"))) as r:
        assert r.status == 200 and (await r.json())["alerts"][0]["outcome"] == "unknown"
    # A new firing of the same rule (new startsAt) is a new alert.
    async with http.post("/api/v1/alertmanager", json=am_payload(am_alert(starts="2026-01-03T00:00:00Z"))) as r:
        assert (await r.json())["alerts"][0]["outcome"] == "created"
    assert await stored_alerts(server) == 2


async def test_alertmanager_unmappable_alerts_store_nothing(server, http):
    good = am_alert("ok")
    no_model = am_alert("nomodel")
    del no_model["labels"]["model_id"]
    bad_value = am_alert("badvalue", severity="urgent")
    bad_value["annotations"]["value"] = "lots"
    async with http.post("/api/v1/alertmanager", json=am_payload(good, no_model, bad_value)) as r:
        assert r.status == 400
        error = (await r.json())["error"]
    fields = {v["field"]: v["description"] for v in error["details"][0]["fieldViolations"]}
    assert set(fields) == {"alerts[1].labels.model_id", "alerts[2].labels.severity", "alerts[2].annotations.value"}
    assert "nothing was stored" in error["message"]
    assert await stored_alerts(server) == 0
    async with http.post("/api/v1/alertmanager", json={**am_payload(good), "version": "3"}) as r:
        assert r.status == 400 and "version" in (await r.text())
    async with http.post("/api/v1/alertmanager", data="[") as r:
        assert r.status == 400


async def test_health_and_metrics(client, server, http):
    async with http.get("/healthz") as r:
        assert r.status == 200 and (await r.json())["status"] == "SERVING"
    async with http.get("/readyz") as r:
        assert r.status == 200 and (await r.json())["database"] == "ok"
    await client.register_model(synthetic_model("fx-m"))
    await client.create_alert("fx-m", "drift", "high", metrics={"drift_score": 0.4})
    async with http.get("/metrics") as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    for line in ('closedloop_database_up 1.0', 'closedloop_jobs{state="QUEUED"} 1.0',
                 'closedloop_decisions_total{decision="QUEUED",rule="drift_auto_retrain"}',
                 'closedloop_alerts_ingested_total{outcome="created",type="drift"}',
                 'closedloop_rpc_duration_seconds_count{method="CreateAlert"}',
                 'closedloop_db_pool_connections{state="in_use"}', 'closedloop_rule_set_version 1.0',
                 'closedloop_table_rows_estimate{table="monitoring_alert_triggers"}',
                 'closedloop_notifications_total', 'closedloop_job_queue_wait_seconds_bucket'):
        assert line in text, line
    async with http.get("/nowhere") as r:
        assert r.status == 404
    await server.stop(grace=0.5)
    with pytest.raises(aiohttp.ClientError):
        async with http.get("/healthz"):
            pass


def relations(node):
    """Every table a plan (EXPLAIN FORMAT JSON) reads."""
    if isinstance(node, dict):
        if "Relation Name" in node:
            yield node["Relation Name"]
        for value in node.values():
            yield from relations(value)
    elif isinstance(node, list):
        for item in node:
            yield from relations(item)


async def test_a_scrape_never_scans_the_alert_and_action_tables(client, server):
    """EXPLAIN every statement a scrape runs (captured with asyncpg's query logger) on a database
    whose alert and action tables hold rows: no plan may read either table."""
    await client.register_model(synthetic_model("fx-scan"))
    for i in range(50):
        await client.create_alert("fx-scan", "drift", "high", metrics={"drift_score": 0.4})
    statements = []
    async with server.pool.acquire() as conn:
        await conn.execute("ANALYZE")
        def logger(record):
            statements.append((record.query, record.args))

        conn.add_query_logger(logger)
        await stats.scrape_figures(conn)
        await asyncio.sleep(0.05)  # asyncpg calls query loggers soon after, not during, the statement
        conn.remove_query_logger(logger)
        assert len(statements) == 2
        for query, args in statements:
            plan = json.loads(await conn.fetchval("EXPLAIN (FORMAT JSON) " + query, *(args or ())))
            read = set(relations(plan))
            assert read and not read & {"monitoring_alert_triggers", "closed_loop_actions"}, (query, read)


async def test_auth_roles_on_the_http_side(database_url, tmp_path):
    ingest, ingest_line = new_token_line("ingest", "alertmanager")
    reader, reader_line = new_token_line("read", "prometheus")
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{ingest_line}\n{reader_line}\n")
    srv, _ = await create_server(make_settings(database_url, tmp_path, auth_tokens=tokens,
                                               http_listen="127.0.0.1:0"))
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{srv.http.port}") as http:
            async with http.get("/metrics") as r:
                assert r.status == 401 and r.headers["WWW-Authenticate"] == "Bearer"
                assert (await r.json())["error"]["status"] == "UNAUTHENTICATED"
            async with http.get("/metrics", headers={"Authorization": f"Bearer {ingest}"}) as r:
                assert r.status == 403
            async with http.get("/metrics", headers={"Authorization": f"Bearer {reader}"}) as r:
                assert r.status == 200
            async with http.get("/healthz") as r:
                assert r.status == 200
            async with http.post("/api/v1/alertmanager", json=am_payload(am_alert()),
                                 headers={"Authorization": f"Bearer {reader}"}) as r:
                assert r.status == 403
            async with http.post("/api/v1/alertmanager", json=am_payload(am_alert()),
                                 headers={"Authorization": f"Bearer {ingest}"}) as r:
                assert r.status == 200
            async with http.post("/v1/alerts", json={}, headers={"Authorization": "Bearer wrong"}) as r:
                assert r.status == 401
    finally:
        await srv.stop(grace=0.5)


async def test_model_scopes_hold_on_the_http_side(database_url, tmp_path):
    """A desk's scoped token writes only its models over HTTP too; a payload naming another desk's
    model is refused whole, before anything is stored."""
    desk, desk_line = new_token_line("ingest", "fx-desk")
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{desk_line} models=fx-*\n")
    srv, _ = await create_server(make_settings(database_url, tmp_path, auth_tokens=tokens,
                                               http_listen="127.0.0.1:0"))
    headers = {"Authorization": f"Bearer {desk}"}
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{srv.http.port}") as http:
            mine = {"alert": {"modelId": "fx-mine", "type": "drift", "severity": "SEVERITY_LOW"}}
            theirs = {"alert": {"modelId": "eq-theirs", "type": "drift", "severity": "SEVERITY_LOW"}}
            async with http.post("/v1/alerts", json=mine, headers=headers) as r:
                assert r.status == 200, await r.text()
            async with http.post("/v1/alerts", json=theirs, headers=headers) as r:
                assert r.status == 403 and (await r.json())["error"]["status"] == "PERMISSION_DENIED"
            payload = am_payload(am_alert("a", model_id="fx-am"), am_alert("b", model_id="eq-am"))
            async with http.post("/api/v1/alertmanager", json=payload, headers=headers) as r:
                assert r.status == 403
        assert await stored_alerts(srv) == 1
    finally:
        await srv.stop(grace=0.5)


async def test_no_unauthenticated_http_beyond_loopback_and_the_old_flag(database_url, tmp_path):
    with pytest.raises(ConfigError, match="--http-listen 0.0.0.0:0 is not a loopback address"):
        await create_server(make_settings(database_url, tmp_path, http_listen="0.0.0.0:0"))
    with pytest.raises(ConfigError, match="old name of --http-listen"):
        make_settings(database_url, tmp_path, http_listen="127.0.0.1:1", metrics_listen="127.0.0.1:2")
    srv, _ = await create_server(make_settings(database_url, tmp_path, metrics_listen="127.0.0.1:0"))
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{srv.http.port}/metrics") as r:
                assert r.status == 200 and "closedloop_database_up 1.0" in await r.text()
    finally:
        await srv.stop(grace=0.5)


async def test_text_postgres_cannot_store_is_refused_by_both_http_doors(http, server):
    """NUL in a label: the same INVALID_ARGUMENT as gRPC's, naming the field; nothing stored."""
    body = {"alert": {"modelId": "fx-nul", "type": "drift", "severity": "SEVERITY_LOW", "labels": {"desk": "f\u0000x"}}}
    async with http.post("/v1/alerts", json=body) as r:
        assert r.status == 400
        fields = {v["field"] for v in (await r.json())["error"]["details"][0]["fieldViolations"]}
    assert any(f.startswith("alert.labels") for f in fields), fields
    async with http.post("/api/v1/alertmanager", json=am_payload(am_alert("nul", desk="f\u0000x"))) as r:
        assert r.status == 400
        fields = {v["field"] for v in (await r.json())["error"]["details"][0]["fieldViolations"]}
    assert any(f.startswith("alerts[0].") for f in fields), fields
    assert await stored_alerts(server) == 0
