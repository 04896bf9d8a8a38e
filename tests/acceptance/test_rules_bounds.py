"""The rule RPCs keep the DSL's bounds and the server loads a folder exactly as `rules check` does.

- a rule source over the DSL's limits is refused before it is parsed (ValidateRules reports it,
  ApplyRules answers INVALID_ARGUMENT);
- compiling the largest legal source runs off the event loop: a health check answers meanwhile;
- `serve --rules FOLDER` reports a rule defined in two files at both real files and lines;
- a closed pipe ends `closedloop rules check` quietly (issue 11, points 2, 4 and 5).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from closedloop.dsl import DEFAULT_LIMITS, RuleCompileError, check_limits
from closedloop.server.app import create_server

from .conftest import make_settings


def _largest_legal_source() -> str:
    """Rules with the longest lists the DSL allows, up to just under its token limit."""
    items = ", ".join(f'"m{i}"' for i in range(DEFAULT_LIMITS.max_list))
    rule_tokens = 2 * DEFAULT_LIMITS.max_list + 20
    count = DEFAULT_LIMITS.max_tokens // rule_tokens - 1
    return "".join(f"rule r{n}:\n    when model_id in [{items}]\n    then record\n\n" for n in range(count))


async def test_a_health_check_answers_while_the_largest_legal_rule_set_compiles(client, server):
    source = _largest_legal_source()
    assert check_limits(source) == []  # legal: the slow path, not the cheap refusal
    validate = asyncio.ensure_future(client.validate_rules(source, "big.rules"))
    async with grpc.aio.insecure_channel(server.test_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        answered_during = 0
        while not validate.done():
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            if not validate.done():
                answered_during += 1
            await asyncio.sleep(0.01)
    result = await validate
    assert result.valid and len(result.rules) > 0
    assert answered_during > 0


async def test_sources_over_the_limits_are_refused_before_parsing(client):
    too_many = "rule r:\n    when " + " or ".join(['type == "x"'] * (DEFAULT_LIMITS.max_tokens // 4)) + "\n    then record\n"
    result = await client.validate_rules(too_many, "tokens.rules")
    assert not result.valid
    assert len(result.diagnostics) == 1 and "too many tokens" in result.diagnostics[0].message
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.apply_rules(too_many, "tokens.rules")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "too many tokens" in err.value.details()


async def test_a_byte_order_mark_from_an_editor_is_not_an_error(client):
    result = await client.validate_rules('\ufeffrule r:\n    when type == "drift"\n    then record\n', "bom.rules")
    assert result.valid, [d.message for d in result.diagnostics]


async def test_serve_reports_a_rule_defined_in_two_files_at_both(database_url, tmp_path):
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "a.rules").write_text('rule drift:\n    when type == "drift"\n    then record\n')
    (folder / "b.rules").write_text('# b\nrule drift:\n    when type == "risk"\n    then record\n')
    with pytest.raises(RuleCompileError) as err:
        await create_server(make_settings(database_url, tmp_path, rules=folder))
    places = {(d.filename.rsplit("/", 1)[-1], d.line) for d in err.value.diagnostics}
    assert places == {("a.rules", 1), ("b.rules", 2)}


def test_rules_check_into_a_closed_pipe_exits_quietly(tmp_path):
    bad = tmp_path / "bad.rules"
    bad.write_text("".join(f"rule r{i}:\n    when metrics.x > \"s\"\n    then record\n" for i in range(3000)))
    result = subprocess.run(
        f'"{sys.executable}" -m closedloop.server.cli rules check "{bad}" | head -1',
        shell=True, capture_output=True, text=True, timeout=120)
    assert result.stdout.count("\n") == 1
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr[-2000:]
