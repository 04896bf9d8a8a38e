"""Settings, bearer tokens and page tokens: pure logic."""

from __future__ import annotations

import argparse
import pathlib

import pytest

from closedloop.server.api import paging
from closedloop.server.api.auth import Authenticator, load_tokens, new_token_line
from closedloop.server.store.models import like_patterns
from closedloop.server.config import Settings, add_arguments, settings_from
from closedloop.server.db.pool import mask_password
from closedloop.server.errors import ConfigError, InvalidArgument, PermissionDenied, Unauthenticated


def test_flags_beat_environment_beat_defaults():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--workers", "4", "--no-run-workers"])
    s = settings_from(args, environ={"CLOSEDLOOP_WORKERS": "9", "CLOSEDLOOP_LISTEN": "127.0.0.1:6000"})
    assert (s.workers, s.run_workers, s.listen) == (4, False, "127.0.0.1:6000")
    assert settings_from(None, environ={}).listen == "127.0.0.1:50051"


@pytest.mark.parametrize("env, message", [
    ({"CLOSEDLOOP_EXECUTOR": "ray"}, "--executor must be local or dask"),
    ({"CLOSEDLOOP_EXECUTOR": "dask"}, "--dask-scheduler"),
    ({"CLOSEDLOOP_WORKERS": "many"}, "--workers: cannot read 'many'"),
    ({"CLOSEDLOOP_TLS_CERT": "/x.pem"}, "--tls-cert and --tls-key go together"),
    ({"CLOSEDLOOP_JOB_LEASE": "0"}, "--job-lease must be > 0"),
])
def test_bad_settings_are_one_clear_error(env, message):
    with pytest.raises(ConfigError, match=message):
        settings_from(None, environ=env)


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        Settings().workers = 3  # type: ignore[misc]


def test_password_masked():
    assert mask_password("postgresql://u:s3cr3t@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert mask_password("postgresql://h/db") == "postgresql://h/db"


def _check(auth: Authenticator, method: str, authorization: str | None) -> str:
    token = auth.identify(authorization)
    auth.authorize(token, method)
    return token.name


def test_tokens_roles_and_file_errors(tmp_path: pathlib.Path):
    ops, ops_line = new_token_line("operator", "alice")
    ingest, ingest_line = new_token_line("ingest", "monitor")
    path = tmp_path / "tokens"
    path.write_text(f"{ops_line}\n{ingest_line}\n")
    auth = Authenticator(load_tokens(path))
    assert ops not in path.read_text()  # stored hashed
    # Never read as a CLI option: a bare urlsafe token starts with '-' one time in 64.
    assert all(new_token_line("read", "x")[0].startswith("cl_") for _ in range(200))
    assert _check(auth, "/closedloop.v1.RuleService/ApplyRules", f"Bearer {ops}") == "alice"
    assert _check(auth, "/closedloop.v1.AlertService/ListAlerts", f"Bearer {ops}") == "alice"  # operator reads
    with pytest.raises(PermissionDenied):
        _check(auth, "/closedloop.v1.AlertService/ListAlerts", f"Bearer {ingest}")
    with pytest.raises(Unauthenticated):
        _check(auth, "/closedloop.v1.AlertService/CreateAlert", None)
    path.write_text("abc operator x\n")
    with pytest.raises(ConfigError, match="tokens:1"):
        load_tokens(path)
    path.write_text(ops_line.replace("operator", "admin") + "\n")
    with pytest.raises(ConfigError, match="unknown role"):
        load_tokens(path)


def test_scoped_tokens_old_lines_and_global_methods(tmp_path: pathlib.Path):
    desk, desk_line = new_token_line("ingest,read", "fx-desk", ["fx-*", "rates-?"])
    ops, ops_line = new_token_line("operator", "alice")
    assert desk_line.endswith(" models=fx-*,rates-?")
    path = tmp_path / "tokens"
    path.write_text(f"{desk_line}\n{ops_line}\n")
    tokens = {t.name: t for t in load_tokens(path)}
    assert tokens["alice"].scopes is None  # a line without models= reaches every model, as before
    scoped = tokens["fx-desk"]
    assert scoped.allows("fx-eurusd") and scoped.allows("rates-1")
    assert not scoped.allows("eq-spx") and not scoped.allows("rates-10") and not scoped.allows("xfx-a")
    auth = Authenticator(list(tokens.values()))
    with pytest.raises(PermissionDenied, match="unscoped"):
        _check(auth, "/closedloop.v1.RuleService/BacktestRules", f"Bearer {desk}")
    path.write_text(ops_line + " models=fx-[ab]\n")
    with pytest.raises(ConfigError, match="tokens:1.*wildcards"):
        load_tokens(path)
    path.write_text(ops_line + " fx-*\n")
    with pytest.raises(ConfigError, match="models="):
        load_tokens(path)


def test_scope_globs_become_like_patterns_with_like_wildcards_escaped():
    assert like_patterns(None) is None
    assert like_patterns(["fx-*", "a_b?", "100%"]) == ["fx-%", "a\\_b_", "100\\%"]


def test_page_tokens_round_trip_and_are_bound_to_their_filters():
    token = paging.encode({"id": 5}, {"model_id": "a"})
    assert paging.decode(token, {"model_id": "a"}, {"id": paging.bigint}) == {"id": 5}
    assert paging.decode("", {}, {"id": paging.bigint}) is None
    with pytest.raises(InvalidArgument):
        paging.decode(token, {"model_id": "b"}, {"id": paging.bigint})
    with pytest.raises(InvalidArgument):
        paging.decode("%%%", {}, {"id": paging.bigint})
