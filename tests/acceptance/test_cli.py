"""The CLI through the public client against a real server: tables, --json, one-line errors."""

from __future__ import annotations

import asyncio
import json

import pytest

from closedloop.server.cli import main

from .helpers import free_port

RULES = """
rule risky:
    when type == "risk" and metrics.risk_score > 50
    then retrain full priority critical cooldown 1h
"""


@pytest.fixture
def cli(server, capsys):
    """Run `closedloop ARGS --target <server>` in a thread (the server runs on this loop)."""
    async def run(*args: str, target: bool = True) -> tuple[int, str, str]:
        argv = [*args, "--target", server.test_target] if target else list(args)
        code = await asyncio.to_thread(main, argv)
        captured = capsys.readouterr()
        return code, captured.out, captured.err
    return run


async def test_models_register_list_and_alerts_send_list(cli, tmp_path):
    spec = tmp_path / "model.json"
    spec.write_text(json.dumps({
        "model_id": "cli-m", "enabled": True,
        "training": {"estimator": "linear_model.SGDClassifier", "synthetic": {"seed": 1, "rows": 800},
                     "target": "direction", "metric": "accuracy"}}))
    code, out, _ = await cli("models", "register", str(spec))
    assert code == 0 and "registered cli-m" in out
    code, out, _ = await cli("models", "list")
    assert code == 0 and "cli-m" in out and "SGDClassifier" in out
    code, out, _ = await cli("alerts", "send", "cli-m", "drift", "--severity", "high", "--metric", "drift_score=0.4",
                             "--label", "desk=fx")
    assert code == 0 and "drift_auto_retrain" in out and "queued" in out
    code, out, _ = await cli("alerts", "list", "--model-id", "cli-m", "--json")
    assert code == 0 and json.loads(out)["alerts"][0]["metrics"] == {"drift_score": 0.4}
    code, out, _ = await cli("jobs", "list", "--model-id", "cli-m")
    assert code == 0 and "queued" in out and "drift_auto_retrain" in out


async def test_rules_apply_and_backtest(cli, tmp_path):
    path = tmp_path / "risky.rules"
    path.write_text(RULES)
    code, out, _ = await cli("rules", "apply", str(path), "--dry-run")
    assert code == 0 and "dry run" in out
    code, out, _ = await cli("alerts", "send", "x", "risk", "--metric", "risk_score=60")
    code, out, _ = await cli("rules", "backtest", str(path), "--since", "1h")
    assert code == 0 and "1 alert(s) replayed" in out and "risky" in out
    code, out, _ = await cli("rules", "apply", str(path))
    assert code == 0 and "active as version 2" in out
    bad = tmp_path / "bad.rules"
    bad.write_text("rule a:\n    when metrics.x > 5m\n    then record\n")
    code, _, err = await cli("rules", "apply", str(bad))
    assert code == 1 and "bad.rules:2:" in err


async def test_rules_apply_reads_a_folder_as_the_server_does(cli, tmp_path):
    folder = tmp_path / "rules"
    folder.mkdir()
    code, _, err = await cli("rules", "apply", str(folder), "--dry-run")
    assert code == 1 and err.strip() == f"closedloop: {folder}: no *.rules files in this folder"
    (folder / "a.rules").write_text(RULES)
    (folder / "b.rules").write_text('rule quiet:\n    when type == "age"\n    then record\n')
    (folder / "notes.txt").write_text("not a rule file")
    code, out, _ = await cli("rules", "apply", str(folder), "--dry-run")
    assert code == 0 and out.strip() == "2 rule(s) checked (dry run)"
    (folder / "c.rules").write_text("rule c:\n    when metrics.x > 5m\n    then record\n")
    code, _, err = await cli("rules", "apply", str(folder), "--dry-run")
    assert code == 1 and f"{folder / 'c.rules'}:2:" in err      # the broken file's own line, not the joined text


async def test_local_rule_tools(cli, tmp_path):
    path = tmp_path / "r.rules"
    path.write_text(RULES)
    assert (await cli("rules", "check", str(path), target=False))[0] == 0
    path.write_text("rule a:\n  when metrics.x > 5m\n  then record\n")
    code, out, _ = await cli("rules", "check", str(path), target=False)
    assert code == 1 and f"{path}:2:" in out and "^" in out


async def test_feedback_report_and_json(cli):
    code, out, _ = await cli("feedback", "report")
    assert code == 0 and "Per rule" in out and "false positive rate" in out
    code, out, _ = await cli("feedback", "report", "--json")
    assert code == 0 and "definitions" in json.loads(out)


async def test_bad_arguments_and_errors_are_one_line(cli):
    code, _, err = await cli("alerts", "send", "m", "drift", "--metric", "drift_score=high")
    assert code == 1 and err.strip() == "closedloop: --metric drift_score: 'high' is not a number"
    code, _, err = await cli("alerts", "send", "m", "drift", "--severity", "extreme")
    assert code == 1 and err.startswith("closedloop: unknown severity 'extreme'")
    code, _, err = await cli("jobs", "cancel", "999999")
    assert code == 1 and err.startswith("closedloop: NOT_FOUND:") and len(err.strip().splitlines()) == 1
    code, _, err = await cli("alerts", "send", "", "drift")
    assert code == 1 and "INVALID_ARGUMENT" in err and "alert.model_id" in err


async def test_server_down_is_one_line(capsys):
    port = free_port()
    code = await asyncio.to_thread(main, ["alerts", "list", "--target", f"127.0.0.1:{port}", "--timeout", "2"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("closedloop: cannot reach the server") and len(err.strip().splitlines()) == 1


async def test_jobs_submit_watch_and_models_rollback_with_workers(database_url, tmp_path, capsys):
    from closedloop.server.app import create_server

    from .conftest import make_settings
    from .test_retrain_loop import MODEL

    srv, port = await create_server(make_settings(database_url, tmp_path, run_workers=True, workers=1))
    target = ["--target", f"127.0.0.1:{port}"]

    async def run(*args):
        code = await asyncio.to_thread(main, [*args, *target])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    try:
        spec = tmp_path / "model.json"
        spec.write_text(json.dumps(MODEL))
        assert (await run("models", "register", str(spec)))[0] == 0
        for version in (1, 2):
            code, out, _ = await run("jobs", "submit", "fx-live", "--reason", f"v{version}")
            job_id = out.split()[1]
            code, out, err = await run("jobs", "watch", job_id)
            assert code == 0, err
            assert "[##############################] 100% succeeded" in out  # the progress bar, filled
            assert f"trained version {version}, promoted; serving version {version}" in out
        code, out, _ = await run("models", "rollback", "fx-live", "--reason", "bad fills")
        assert code == 0 and out.strip() == "fx-live is at version 1"
        code, out, _ = await run("models", "list", "--json")
        assert json.loads(out)["models"][0]["current_version"] == "1"
        code, out, _ = await run("jobs", "cancel", job_id)
        assert code == 1 and "FAILED_PRECONDITION" in out + _
    finally:
        await srv.stop(2)
