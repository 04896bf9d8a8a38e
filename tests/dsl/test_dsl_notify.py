"""`notify TARGET`: the target is checked against the configured names at compile time."""

from __future__ import annotations

import pytest

from closedloop.dsl import ActionSpec, RuleCompileError, check, compile_rules, format_source, load_rule_tree

TARGETS = frozenset({"pagerduty_fx", "slack_quants"})
SOURCE = 'rule page:\n    when type == "drift"\n    then record, notify {}\n'


def test_known_target_compiles_into_the_action():
    compiled = compile_rules(SOURCE.format("pagerduty_fx"), "t.rules", targets=TARGETS)
    assert compiled.rules[0].actions == (ActionSpec("record"), ActionSpec("notify", target="pagerduty_fx"))
    assert ActionSpec("notify", target="pagerduty_fx").describe() == "notify pagerduty_fx"


def test_unknown_target_names_it_and_suggests_the_closest():
    with pytest.raises(RuleCompileError) as exc:
        compile_rules(SOURCE.format("pagerduty_f"), "t.rules", targets=TARGETS)
    [d] = exc.value.diagnostics
    assert (d.code, d.line, d.column) == ("unknown-target", 3, 25)
    assert d.message == "unknown notification target 'pagerduty_f'; did you mean 'pagerduty_fx'?"


def test_unknown_target_without_a_close_name_lists_the_targets():
    result = check(SOURCE.format("email_ops"), "t.rules", targets=TARGETS)
    assert [d.message for d in result.diagnostics] == [
        "unknown notification target 'email_ops' (targets: pagerduty_fx, slack_quants)"]


def test_no_configured_targets_says_where_to_add_one():
    result = check(SOURCE.format("slack_quants"), "t.rules", targets=frozenset())
    assert "no notification targets are configured" in result.diagnostics[0].message


def test_without_target_names_any_name_compiles():
    compiled = compile_rules(SOURCE.format("anything"), "t.rules")
    assert compiled.rules[0].actions[1].target == "anything"


@pytest.mark.parametrize("action, message", [
    ("notify slack_quants pagerduty_fx", "notify takes one target name"),
    ('notify "slack"', 'notify needs a target name, not "slack"'),
    ("notify 12", "notify needs a target name, not 12"),
])
def test_malformed_notify(action, message):
    result = check(f"rule r: when true then {action}\n", "t.rules", targets=TARGETS)
    assert [d.message for d in result.diagnostics if d.is_error] == [message]


def test_bare_notify_only_records_and_is_warned_about():
    result = check("rule r: when true then notify\n", "t.rules", targets=TARGETS)
    assert result.ok and result.rules[0].actions == (ActionSpec("notify"),)
    assert [d.code for d in result.diagnostics] == ["no-target"]


def test_two_targets_in_one_rule_are_two_actions():
    compiled = compile_rules("rule r: when true then notify slack_quants, notify pagerduty_fx\n", targets=TARGETS)
    assert [a.target for a in compiled.rules[0].actions] == ["slack_quants", "pagerduty_fx"]


def test_format_keeps_the_target():
    assert "then notify slack_quants" in format_source("rule r: when true then notify   slack_quants\n")


def test_folder_loading_checks_targets(tmp_path):
    (tmp_path / "a.rules").write_text("rule a: when true then notify slak_quants\n")
    with pytest.raises(RuleCompileError) as exc:
        load_rule_tree(tmp_path, targets=TARGETS)
    assert "did you mean 'slack_quants'?" in exc.value.render()
