"""Scoped tokens and the audit trail (issue 10, point 11), against the real server with real tokens."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import grpc
import pytest

from closedloop import AsyncClient
from closedloop.server.api.auth import new_token_line
from closedloop.server.app import create_server
from closedloop.server.cli import main as cli_main
from closedloop.v1 import alert_pb2, common_pb2

from .conftest import make_settings
from .helpers import synthetic_model

DENIED = grpc.StatusCode.PERMISSION_DENIED
NOT_FOUND = grpc.StatusCode.NOT_FOUND


@pytest.fixture
async def scoped(database_url, tmp_path):
    """A server with four tokens: an unscoped operator, an fx desk (ingest+read), an fx reader and an
    fx operator. Yields (target, {name: token})."""
    specs = {"ops": ("operator,ingest", ()), "fx-desk": ("ingest,read", ("fx-*",)), "fx-reader": ("read", ("fx-*",)),
             "fx-ops": ("operator", ("fx-*",))}
    tokens, lines = {}, []
    for name, (roles, models) in specs.items():
        tokens[name], line = new_token_line(roles, name, models)
        lines.append(line)
    path = tmp_path / "tokens"
    path.write_text("\n".join(lines) + "\n")
    srv, port = await create_server(make_settings(database_url, tmp_path, auth_tokens=path))
    try:
        yield f"127.0.0.1:{port}", tokens
    finally:
        await srv.stop(1)


async def _code(awaitable) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await awaitable
    return err.value.code()


def _request(model_id: str, n: int) -> alert_pb2.CreateAlertRequest:
    return alert_pb2.CreateAlertRequest(
        alert=alert_pb2.Alert(model_id=model_id, type="drift", severity=common_pb2.SEVERITY_LOW),
        request_id=f"{model_id}-{n}")


async def test_desk_token_writes_its_models_and_is_refused_for_others(scoped):
    target, t = scoped
    async with AsyncClient(target, token=t["fx-desk"]) as desk, AsyncClient(target, token=t["ops"]) as ops:
        created = await desk.create_alert("fx-eurusd", "drift", "high")
        assert created.model_id == "fx-eurusd"
        assert await _code(desk.create_alert("eq-spx", "drift", "high")) == DENIED

        # A stream is checked message by message: the fx alerts before the eq one are stored, the
        # stream ends PERMISSION_DENIED naming the message, and the eq alert is not stored.
        replies = []
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for reply in desk.stream_alerts([_request("fx-a", 1), _request("fx-b", 2), _request("eq-x", 3),
                                                   _request("fx-c", 4)]):
                replies.append(reply.model_id)
        assert err.value.code() == DENIED and "requests[2].alert.model_id" in err.value.details()
        assert replies == ["fx-a", "fx-b"]
        assert (await ops.list_alerts(model_id="eq-x")).alerts == []

        # Single resources of other models look absent; named models are refused.
        eq_alert = await ops.create_alert("eq-spx", "drift", "high")
        assert await _code(desk.get_alert(eq_alert.id)) == NOT_FOUND
        assert (await desk.get_alert(created.id)).id == created.id
        assert await _code(desk.evaluate_rules(eq_alert)) == DENIED
        assert await _code(desk.list_alerts(model_id="eq-spx")) == DENIED


async def test_scoped_reader_lists_only_its_models_across_pages(scoped):
    target, t = scoped
    async with AsyncClient(target, token=t["ops"]) as ops, AsyncClient(target, token=t["fx-reader"]) as reader, \
            AsyncClient(target, token=t["fx-ops"]) as fx_ops:
        models = ["eq-1", "fx-1", "eq-2", "fx-2", "eq-3", "fx-3", "fx_x"]  # fx_x: `_` is no wildcard
        jobs = {}
        for m in models:
            await ops.register_model(synthetic_model(m))
            jobs[m] = (await ops.submit_retrain(m)).id
        for n in range(8):
            for m in models:
                await ops.create_alert(m, "drift", "low", request_id=f"{m}-{n}")
        fx = {"fx-1", "fx-2", "fx-3"}

        seen_models, token = [], ""
        while True:
            page = await reader.list_models(page_size=1, page_token=token)
            assert len(page.models) == 1 or not page.next_page_token  # filtered in the query: full pages
            seen_models += [m.model_id for m in page.models]
            token = page.next_page_token
            if not token:
                break
        assert seen_models == sorted(fx)

        seen_alerts, token = [], ""
        while True:
            page = await reader.list_alerts(page_size=5, page_token=token)
            assert len(page.alerts) == 5 or not page.next_page_token
            seen_alerts += [a.model_id for a in page.alerts]
            token = page.next_page_token
            if not token:
                break
        assert len(seen_alerts) == 24 and set(seen_alerts) == fx

        seen_jobs, token = [], ""
        while True:
            page = await reader.list_jobs(page_size=2, page_token=token)
            seen_jobs += [j.model_id for j in page.jobs]
            token = page.next_page_token
            if not token:
                break
        assert sorted(seen_jobs) == sorted(fx)

        report = await reader.feedback_report()
        assert {m.model_id for m in report.models} <= fx
        assert await _code(reader.feedback_report(model_id="eq-1")) == DENIED
        assert await _code(reader.get_model("eq-1")) == DENIED
        assert (await reader.get_model("fx-1")).model_id == "fx-1"
        assert await _code(reader.list_model_versions("eq-1")) == DENIED
        assert await _code(reader.get_job(jobs["eq-1"])) == NOT_FOUND
        assert (await reader.get_job(jobs["fx-1"])).model_id == "fx-1"
        assert await _code(reader.list_jobs(model_id="eq-2")) == DENIED
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in reader.watch_job(jobs["eq-1"]):
                pass
        assert err.value.code() == NOT_FOUND

        # A scoped operator acts on its models only, and never on the global rule set.
        assert await _code(fx_ops.cancel_job(jobs["eq-1"])) == NOT_FOUND
        assert (await ops.get_job(jobs["eq-1"])).state != 0 and (await ops.get_job(jobs["eq-1"])).end_time.seconds == 0
        assert (await fx_ops.cancel_job(jobs["fx-1"])).model_id == "fx-1"
        assert await _code(fx_ops.submit_retrain("eq-1")) == DENIED
        assert await _code(fx_ops.register_model(synthetic_model("eq-9"))) == DENIED
        assert await _code(fx_ops.rollback_model("eq-1")) == DENIED
        assert await _code(fx_ops.apply_rules("")) == DENIED
        assert await _code(fx_ops.list_audit_records()) == DENIED


async def test_every_operator_action_leaves_one_audit_row(scoped, capsys):
    target, t = scoped
    async with AsyncClient(target, token=t["ops"]) as ops, AsyncClient(target, token=t["fx-ops"]) as fx_ops, \
            AsyncClient(target, token=t["fx-desk"]) as desk, AsyncClient(target) as anonymous:
        await ops.register_model(synthetic_model("fx-1"))                              # 1 OK
        await ops.apply_rules("")                                                      # 2 OK
        job = await ops.submit_retrain("fx-1", reason="see postgresql://u:hunter2@db/x")  # 3 OK
        await ops.cancel_job(job.id)                                                   # 4 OK
        assert await _code(ops.rollback_model("fx-1")) == grpc.StatusCode.FAILED_PRECONDITION  # 5
        alert = await desk.create_alert("fx-1", "drift", "low")                        # not an operator action
        await ops.update_alert_state(alert.id, "acknowledged")                         # 6 OK
        assert await _code(desk.submit_retrain("fx-1")) == DENIED                      # 7 role
        assert await _code(fx_ops.submit_retrain("eq-1")) == DENIED                    # 8 scope
        assert await _code(fx_ops.apply_rules("")) == DENIED                           # 9 global
        assert await _code(fx_ops.update_alert_state(alert.id + "0", "resolved")) == NOT_FOUND  # 10
        assert await _code(ops.register_model({"model_id": "bad id!"})) == grpc.StatusCode.INVALID_ARGUMENT  # 11
        assert await _code(anonymous.submit_retrain("fx-1")) == grpc.StatusCode.UNAUTHENTICATED  # not recorded
        await ops.get_model("fx-1")                                                    # a read: not recorded

        records = list(reversed((await ops.list_audit_records(page_size=100)).records))
        got = [(r.token_name, r.method.split("/")[1], r.code) for r in records]
        assert got == [
            ("ops", "RegisterModel", "OK"), ("ops", "ApplyRules", "OK"), ("ops", "SubmitRetrain", "OK"),
            ("ops", "CancelJob", "OK"), ("ops", "RollbackModel", "FAILED_PRECONDITION"),
            ("ops", "UpdateAlertState", "OK"), ("fx-desk", "SubmitRetrain", "PERMISSION_DENIED"),
            ("fx-ops", "SubmitRetrain", "PERMISSION_DENIED"), ("fx-ops", "ApplyRules", "PERMISSION_DENIED"),
            ("fx-ops", "UpdateAlertState", "NOT_FOUND"), ("ops", "RegisterModel", "INVALID_ARGUMENT"),
        ]
        submit = records[2]
        assert submit.request["model_id"] == "fx-1" and "hunter2" not in json.dumps(dict(submit.request))
        assert "lacks role" in records[6].message and "may not act on model 'eq-1'" in records[7].message

        # Paging, and the CLI reading the same trail.
        first = await ops.list_audit_records(page_size=4)
        rest = await ops.list_audit_records(page_size=100, page_token=first.next_page_token)
        assert [r.id for r in [*first.records, *rest.records]] == [r.id for r in reversed(records)]
        code = await asyncio.to_thread(cli_main, ["audit", "--target", target, "--token", t["ops"], "--since", "1d",
                                                  "--limit", "3"])
        out = capsys.readouterr().out
        assert code == 0
        lines = out.splitlines()
        assert len(lines) == 2 + 3  # header, rule, the three newest records
        assert "RetrainService/RegisterModel" in lines[2] and "INVALID_ARGUMENT" in lines[2]
        assert lines[3].split()[2:4] == ["fx-ops", "AlertService/UpdateAlertState"]
        code = await asyncio.to_thread(cli_main, ["audit", "--target", target, "--token", t["fx-ops"]])
        assert code == 1 and "PERMISSION_DENIED" in capsys.readouterr().err


async def test_audit_rows_cannot_be_updated_or_deleted(scoped, database_url):
    target, t = scoped
    async with AsyncClient(target, token=t["ops"]) as ops:
        await ops.apply_rules("")
    conn = await asyncpg.connect(database_url)  # the service's own role (a superuser here)
    try:
        for statement in ("UPDATE audit_records SET code = 'OK', token_name = 'someone-else'",
                          "DELETE FROM audit_records", "TRUNCATE audit_records"):
            with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError, match="append-only"):
                await conn.execute(statement)
        assert await conn.fetchval("SELECT count(*) FROM audit_records WHERE token_name = 'ops'") == 1
    finally:
        await conn.close()
