"""closedloop's rule language: typed response rules, compiled to fast predicates.

::

    rule drift_auto_retrain "Drift detection auto-retraining":
        when type == "drift" and metrics.drift_score > 0.25
        then retrain full priority high cooldown 24h

A file holds rules and ``#`` comments. A rule has a name, an optional title, ``when`` a condition
and ``then`` one or more actions separated by commas.

Values and their types:

- alert fields: ``type``, ``model_id``, ``source`` (string), ``severity`` (low < medium < high <
  critical, written bare: ``severity >= medium``), ``age`` (duration since observe_time),
  ``metrics.NAME`` (number), ``labels.NAME`` (string); ``metrics["odd-name"]`` for keys that are
  not identifiers.
- model facts from the registry: ``model.age`` and ``model.last_retrained`` (durations),
  ``model.version`` (number), ``model.enabled`` and ``model.registered`` (bool).
- literals: numbers ``0.25``, percentages ``10%`` (= 0.10), durations ``30s 15m 12h 30d 2w
  1h30m``, strings ``"drift"``, ``true``/``false``, lists ``[...]`` after ``in``.

Operators, loosest first: ``or``, ``and``, ``not``, comparisons (``== != < <= > >=``, ``in [...]``,
``not in [...]``), ``+ -``, ``* /``, unary ``-``. Functions: ``abs(x)``, ``min(x, y, ...)``,
``max(x, y, ...)``, ``has(metrics.x)`` / ``has(labels.x)`` / ``has(model.age)``.

A metric, label or model fact that is absent is *missing*: comparisons with it are neither true
nor false, and a rule matches only when its condition is true (interpret.py has the details).
Nothing raises at run time; division by zero is missing too.

Actions: ``retrain full|incremental priority P [cooldown D [per model]]``, ``rollback [priority
P] [cooldown D [per model]]``, ``record``, ``notify TARGET``
(a notification target of the server's configuration; ``compile_rules(..., targets=names)``
reports an unknown name, with "did you mean").

Passes: parser.py (Lark LALR) -> ast.py (typed syntax tree) -> checker.py (types, diagnostics)
-> compiler.py (Python predicates); ruleset.py drives them and indexes the compiled rules.
text.py holds the one rule for line breaks and decodes files; loader.py reads a rule file or
folder exactly as the server runs it (``load_rule_tree``; ``check_rule_tree`` for `rules check`).
``check_limits`` is the cheap pre-parse bound on size, tokens and rules that RPCs call first.
Nothing here imports the server or the generated protobuf stubs.
"""

from __future__ import annotations

from importlib import resources

from .diagnostics import Diagnostic, RuleCompileError, Span
from .facts import ActionSpec, AlertFacts, ModelFacts, RuleExplanation, RuleInfo, RuleMatch, Threshold
from .formatter import format_source
from .loader import RuleTree, check_rule_tree, load_rule_tree, read_rule_tree, read_source
from .parser import DEFAULT_LIMITS, Limits, check_limits
from .ruleset import CheckResult, CompiledRuleSet, check, compile_rules
from .text import decode_source

DEFAULT_RULES_FILE = "default.rules"


def load_default_rules() -> tuple[str, str]:
    """(source, filename) of the rules the server runs when no --rules is given."""
    text = resources.files(__package__).joinpath(DEFAULT_RULES_FILE).read_text(encoding="utf-8")
    return text, DEFAULT_RULES_FILE


__all__ = [
    "ActionSpec",
    "AlertFacts",
    "CheckResult",
    "CompiledRuleSet",
    "DEFAULT_LIMITS",
    "Diagnostic",
    "Limits",
    "ModelFacts",
    "RuleCompileError",
    "RuleExplanation",
    "RuleInfo",
    "RuleMatch",
    "RuleTree",
    "Span",
    "Threshold",
    "check",
    "check_limits",
    "check_rule_tree",
    "compile_rules",
    "decode_source",
    "format_source",
    "load_default_rules",
    "load_rule_tree",
    "read_rule_tree",
    "read_source",
]
