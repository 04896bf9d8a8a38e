"""The `closedloop rules` commands as functions: output and exit status."""

from __future__ import annotations

import io
import json
from pathlib import Path

from closedloop.dsl import load_default_rules
from closedloop.dsl.tools import cmd_check, cmd_explain, cmd_fmt, cmd_test

GOOD = 'rule drift:\n    when type == "drift" and metrics.drift_score > 0.25\n    then retrain full priority high cooldown 24h\n'
BAD = "rule r:\n    when model.age > 30\n    then retrain full priority high\n"


def run(fn, *args) -> tuple[int, str]:
    out = io.StringIO()
    status = fn(*args, out)
    return status, out.getvalue()


def test_check_good_and_bad_files(tmp_path: Path):
    (tmp_path / "good.rules").write_text(GOOD)
    status, out = run(cmd_check, [str(tmp_path / "good.rules")])
    assert status == 0 and out.startswith("ok: 1 file, 1 valid rule, 0 errors, 0 warnings")
    (tmp_path / "bad.rules").write_text(BAD)
    status, out = run(cmd_check, [str(tmp_path)])  # a folder: every *.rules in it
    assert status == 1
    assert f"{tmp_path / 'bad.rules'}:2:10: error: cannot compare duration with number" in out
    assert "        when model.age > 30\n             ^~~~~~~~~~~~~~" in out
    assert ":3:10: warning: retrain without a cooldown" in out
    assert out.rstrip().endswith("FAILED: 2 files, 1 valid rule, 1 error, 1 warning")


def test_check_missing_path(tmp_path: Path):
    status, out = run(cmd_check, [str(tmp_path / "nope.rules")])
    assert status == 1 and "no such file or folder" in out
    status, out = run(cmd_check, [str(tmp_path)])
    assert status == 1 and "no *.rules files" in out


def test_fmt_print_check_write(tmp_path: Path):
    path = tmp_path / "x.rules"
    path.write_text("rule a: when type=='x' then record\n".replace("'", '"'))
    status, out = run(cmd_fmt, [str(path)], False, False)
    assert status == 0 and out == 'rule a:\n    when type == "x"\n    then record\n'
    status, out = run(cmd_fmt, [str(path)], False, True)
    assert status == 1 and out == f"would reformat {path}\n"
    status, out = run(cmd_fmt, [str(path)], True, False)
    assert status == 0 and out == f"reformatted {path}\n"
    assert path.read_text() == 'rule a:\n    when type == "x"\n    then record\n'
    assert run(cmd_fmt, [str(path)], False, True) == (0, "")
    path.write_text("rule a: when then record\n")
    status, out = run(cmd_fmt, [str(path)], True, False)
    assert status == 1 and ":1:14: error: unexpected 'then', expected an expression" in out
    assert path.read_text() == "rule a: when then record\n"  # never rewritten when it does not parse


def test_rule_tests_pass_and_fail(tmp_path: Path):
    (tmp_path / "mine.rules").write_text(GOOD)
    (tmp_path / "mine_test.toml").write_text(
        'rules = "mine.rules"\n'
        "[[tests]]\n"
        'name = "fires"\n'
        'alert = { type = "drift", metrics = { drift_score = 0.3 } }\n'
        'expect = ["drift: retrain full priority high cooldown 24h"]\n'
        "[[tests]]\n"
        'name = "wrong expectation"\n'
        'alert = { type = "drift", metrics = { drift_score = 0.3 } }\n'
        'model = { age = "2d", version = 4 }\n'
        'expect = ["drift: retrain incremental priority high cooldown 24h"]\n'
        "[[tests]]\n"
        'name = "quiet"\n'
        'alert = { type = "drift", metrics = { drift_score = 0.1 } }\n'
        'expect = ["drift"]\n'
    )
    status, out = run(cmd_test, [str(tmp_path / "mine_test.toml")])
    assert status == 1
    assert f"FAIL {tmp_path / 'mine_test.toml'}: wrong expectation\n" in out
    assert "  expected: drift: retrain incremental priority high cooldown 24h\n" in out
    assert "  got:      drift: retrain full priority high cooldown 1d\n" in out
    assert f"FAIL {tmp_path / 'mine_test.toml'}: quiet\n  expected: drift\n  got:      (no rule matched)\n" in out
    assert out.endswith("3 tests: 1 passed, 2 failed\n")


def test_rule_tests_of_the_defaults_pass():
    status, out = run(cmd_test, [str(Path(__file__).parent / "rules")])
    assert (status, out) == (0, "10 tests: 10 passed, 0 failed\n")


def test_rule_test_file_errors(tmp_path: Path):
    bad = tmp_path / "bad_test.toml"
    bad.write_text('rules = "default"\n[[tests]]\nname = "typo"\nalert = { type = "drift", sevrity = "high" }\nexpect = []\n')
    status, out = run(cmd_test, [str(bad)])
    assert status == 1 and "typo: unknown alert field 'sevrity'" in out
    bad.write_text('rules = "missing.rules"\n[[tests]]\nalert = { type = "drift" }\nexpect = []\n')
    status, out = run(cmd_test, [str(bad)])
    assert status == 1 and "missing.rules: no such file or folder" in out  # read by the loader now
    bad.write_text("rules = [\n")
    status, out = run(cmd_test, [str(bad)])
    assert status == 1 and "not valid TOML" in out


def test_explain(tmp_path: Path):
    rules = tmp_path / "default.rules"
    rules.write_text(load_default_rules()[0])
    alert = tmp_path / "alert.json"
    alert.write_text(json.dumps({"type": "performance", "severity": "SEVERITY_HIGH", "metrics": {"performance_drop": 0.2}}))
    status, out = run(cmd_explain, str(rules), str(alert))
    assert status == 0
    assert "performance_auto_retrain: MATCH\n  true     type == \"performance\"\n  true     severity >= medium\n" in out
    assert "  -> retrain incremental priority medium cooldown 12h\n" in out
    assert "drift_auto_retrain: no match\n  false    type == \"drift\"\n  missing  metrics.drift_score > 0.25\n" in out
    assert out.endswith("actions: performance_auto_retrain: retrain incremental priority medium cooldown 12h\n")
    alert.write_text(json.dumps({"alert": {"type": "age"}, "model": {"age": "40d"}}))
    status, out = run(cmd_explain, "default", str(alert))
    assert status == 0 and "model_age_auto_retrain: MATCH" in out
    alert.write_text("{not json")
    status, out = run(cmd_explain, str(rules), str(alert))
    assert status == 1
