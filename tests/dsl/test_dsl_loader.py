"""Issue 11: check and serve agree (loader.py), and every input file a tool reads gets a
one-line error with its position, never a traceback."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from closedloop.dsl import (
    Limits,
    RuleCompileError,
    check_rule_tree,
    compile_rules,
    load_rule_tree,
    read_rule_tree,
)
from closedloop.dsl.tools import cmd_check, cmd_explain, cmd_test


def run(fn, *args) -> tuple[int, str]:
    out = io.StringIO()
    status = fn(*args, out)
    return status, out.getvalue()


def test_a_folder_is_its_files_joined_as_the_server_joins_them(tmp_path: Path):
    (tmp_path / "b.rules").write_text("rule b: when true then record")  # no final newline
    (tmp_path / "a.rules").write_text("# first\nrule a: when true then notify\n")
    (tmp_path / "notes.txt").write_text("not rules")
    tree = read_rule_tree(tmp_path)
    assert tree.source == "# --- a.rules\n# first\nrule a: when true then notify\n\n# --- b.rules\nrule b: when true then record"
    assert tree.filename == str(tmp_path)
    assert [r.name for r in load_rule_tree(tmp_path).rules] == ["a", "b"]
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_rule_tree(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no \\*.rules files"):
        read_rule_tree(tmp_path / "empty")


def test_duplicate_names_across_files_are_reported_at_both_definitions(tmp_path: Path):
    (tmp_path / "a.rules").write_text("rule drift: when true then record\n")
    (tmp_path / "b.rules").write_text("\n\nrule other: when true then record\nrule drift: when true then notify\n")
    status, out = run(cmd_check, [str(tmp_path)])
    assert status == 1
    assert f"{tmp_path / 'a.rules'}:1:6: error: rule 'drift' is defined again at {tmp_path / 'b.rules'}:4:6" in out
    assert f"{tmp_path / 'b.rules'}:4:6: error: duplicate rule name 'drift' (first defined at {tmp_path / 'a.rules'}:1:6)" in out
    assert "    rule drift: when true then notify\n         ^~~~~" in out
    with pytest.raises(RuleCompileError) as exc:
        load_rule_tree(tmp_path)
    assert {(d.filename, d.line) for d in exc.value.errors} == {(str(tmp_path / "a.rules"), 1), (str(tmp_path / "b.rules"), 4)}
    assert "rule drift: when true then notify" in exc.value.render()  # rendered from the real file


def test_limits_of_the_joined_files_are_reported_in_the_real_file(tmp_path: Path):
    for name in "abc":
        (tmp_path / f"{name}.rules").write_text("".join(f"rule {name}{i}: when true then record\n" for i in range(3)))
    result = check_rule_tree(read_rule_tree(tmp_path), Limits(max_rules=7))
    assert [(Path(d.filename).name, d.line, d.code) for d in result.diagnostics] == [("c.rules", 2, "limit-rules")]
    with pytest.raises(RuleCompileError):
        load_rule_tree(tmp_path, Limits(max_rules=7))


def test_bom_and_bad_utf8_in_rule_files(tmp_path: Path):
    (tmp_path / "a.rules").write_bytes(b"\xef\xbb\xbfrule a: when true then record\n")
    assert run(cmd_check, [str(tmp_path / "a.rules")]) == (0, "ok: 1 file, 1 valid rule, 0 errors, 0 warnings\n")
    (tmp_path / "b.rules").write_bytes(b"rule b: when true then record\n# \xe9t\xe9\n")
    status, out = run(cmd_check, [str(tmp_path)])
    assert status == 1
    assert f"{tmp_path / 'b.rules'}:2:3: error: not valid UTF-8: byte 0xe9" in out
    assert out.endswith("FAILED: 2 files, 1 valid rule, 1 error, 0 warnings\n")


# A folder of small files: random names, some shared, some files broken.
_rule = st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.sampled_from(["true", "model.age > 1", "metrics.x >", "type == \"x\""]))
_file = st.lists(_rule, max_size=3).map(lambda rs: "".join(f"rule {n}: when {c} then record\n" for n, c in rs))
_folder = st.lists(st.one_of(_file, _file.map(lambda t: t.rstrip("\n")), _file.map(lambda t: t.replace("\n", "\r\n"))), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_folder)
def test_checking_a_folder_agrees_with_compiling_what_the_server_loads(tmp_path_factory, texts):
    folder = tmp_path_factory.mktemp("rules")
    for i, text in enumerate(texts):
        (folder / f"{i:02}.rules").write_bytes(text.encode())
    tree = read_rule_tree(folder)
    result = check_rule_tree(tree)
    try:
        served = compile_rules(tree.source, tree.filename)  # what the server compiles
    except RuleCompileError:
        served = None
    assert result.ok == (served is not None)
    if served is not None:
        assert [r.name for r in result.rules] == [r.name for r in served.rules]
        assert [r.name for r in load_rule_tree(folder).rules] == [r.name for r in served.rules]
    for d in result.diagnostics:  # every position is in a real file, on a real line
        assert Path(d.filename).parent == folder
        assert 1 <= d.line <= max(1, len((folder / Path(d.filename).name).read_text().splitlines()))


# --- inputs of rules test / explain -----------------------------------------------------------------

RULES = "rule r: when metrics.x > 1 then record\n"


@pytest.mark.parametrize(
    "content,expected",
    [
        ('{"type": "drift", "metrics": {"x": ' + "9" * 401 + "}}", "metrics.x: must be a finite number"),
        ('{"type": "drift", "metrics": {"x": ' + "9" * 5000 + "}}", "metrics.x: must be a finite number"),
        ('{"type": "drift", "metrics": {"x": NaN}}', "metrics.x: must be a finite number, got nan"),
        ('{"type": "drift", "metrics": {"x": 1e400}}', "metrics.x: must be a finite number, got inf"),
        ("[" * 100_000, ":1:33: error: nested more than 32 levels deep"),
        ('{"a": [' + "{" * 40, ":1:38: error: nested more than 32 levels deep"),
        ('{"type": "drift",\n "metrics": }', ":2:13: error: not valid JSON: Expecting value"),
        (b'{"type": "dr\xffift"}', ":1:13: error: not valid UTF-8: byte 0xff"),
    ],
    ids=["401-digits", "5000-digits", "nan", "inf", "deep", "deep-mixed", "syntax", "utf8"],
)
def test_explain_input_errors_are_one_line_with_a_position(tmp_path: Path, content, expected):
    (tmp_path / "r.rules").write_text(RULES)
    alert = tmp_path / "alert.json"
    alert.write_bytes(content if isinstance(content, bytes) else content.encode())
    status, out = run(cmd_explain, str(tmp_path / "r.rules"), str(alert))
    assert status == 1 and out.count("\n") == 1 and out.startswith(str(alert)) and expected in out, out


def test_explain_accepts_a_bom(tmp_path: Path):
    (tmp_path / "r.rules").write_text(RULES)
    alert = tmp_path / "alert.json"
    alert.write_bytes(b"\xef\xbb\xbf" + json.dumps({"type": "drift", "metrics": {"x": 2}}).encode())
    status, out = run(cmd_explain, str(tmp_path / "r.rules"), str(alert))
    assert status == 0 and "r: MATCH" in out


@pytest.mark.parametrize(
    "content,expected",
    [
        ("rules = 'r.rules'\n[[tests]]\nalert = { type = 'drift', metrics = { x = nan } }\nexpect = []\n", "metrics.x: must be a finite number, got nan"),
        ("rules = 'r.rules'\n[[tests]]\nalert = { type = 'drift', metrics = { x = " + "9" * 401 + " } }\nexpect = []\n", "metrics.x: must be a finite number"),
        ("rules = 'r.rules'\nx = " + "[" * 10_000, ":2:37: error: nested more than 32 levels deep"),
        ("rules = 'r.rules'\n[[tests]\n", ":2:8: error: not valid TOML"),
    ],
    ids=["nan", "401-digits", "deep", "syntax"],
)
def test_rule_test_file_errors_are_one_line(tmp_path: Path, content, expected):
    (tmp_path / "r.rules").write_text(RULES)
    path = tmp_path / "t.toml"
    path.write_text(content)
    status, out = run(cmd_test, [str(path)])
    first = out.splitlines()[0]
    assert status == 1 and first.startswith(str(path)) and expected in first, out
