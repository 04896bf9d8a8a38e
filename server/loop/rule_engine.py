"""The active rule set of this process: compiled once, swapped atomically, kept in step with the database.

A swap is one attribute assignment of an immutable (version, CompiledRuleSet) pair, so an alert is
always evaluated against one whole rule set, never half of two. Sources of a new set: ApplyRules,
SIGHUP (re-read --rules), and a NOTIFY from another replica that applied a set.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

import asyncpg
import structlog

from closedloop.dsl import (CompiledRuleSet, RuleCompileError, compile_rules, load_default_rules, load_rule_tree,
                            read_rule_tree)

from ..store import rules as rule_store

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ActiveRules:
    version: int
    ruleset: CompiledRuleSet


class RuleEngine:
    def __init__(self, pool: asyncpg.Pool, rules_path: pathlib.Path | None,
                 targets: frozenset[str] | None = None) -> None:
        """`targets`: the configured notification target names `notify` may use (None: unchecked)."""
        self.pool = pool
        self.rules_path = rules_path
        self.targets = targets
        self.active: ActiveRules | None = None

    async def load_at_start(self) -> ActiveRules:
        """--rules wins; without it the stored active set; without that, the bundled defaults."""
        async with self.pool.acquire() as conn:
            stored = await rule_store.active(conn)
        if self.rules_path is not None:
            # The same loader as `closedloop rules check`: a folder joined as check joins it, errors
            # at their real files and lines. RuleCompileError propagates: bad --rules stops start-up.
            compiled = load_rule_tree(self.rules_path, targets=self.targets)
        else:
            source, filename = ((stored["source"], stored["filename"]) if stored is not None
                                else load_default_rules())
            compiled = compile_rules(source, filename, targets=self.targets)
        if stored is not None and stored["sha256"] == compiled.sha256:
            self.active = ActiveRules(stored["version"], compiled)
        else:
            self.active = await self._store(compiled)
        log.info("rules.loaded", version=self.active.version, rules=len(compiled.rules), filename=compiled.filename)
        return self.active

    async def apply(self, compiled: CompiledRuleSet) -> ActiveRules:
        self.active = await self._store(compiled)
        log.info("rules.applied", version=self.active.version, rules=len(compiled.rules))
        return self.active

    async def reload_from_file(self) -> ActiveRules | None:
        """SIGHUP: re-read --rules; a set that fails to compile leaves the old one active."""
        if self.rules_path is None:
            log.info("rules.reload_skipped", reason="no --rules given")
            return None
        try:
            if not read_rule_tree(self.rules_path).source.strip():
                # Most likely a file caught half-written by an editor or deploy; an intentionally
                # empty rule set can still be applied with ApplyRules.
                raise OSError(f"{self.rules_path} is empty")
            compiled = load_rule_tree(self.rules_path, targets=self.targets)
        except (OSError, RuleCompileError) as exc:
            log.error("rules.reload_failed", error=str(exc), kept_version=self.active.version if self.active else 0)
            return None
        if self.active is not None and self.active.ruleset.sha256 == compiled.sha256:
            return self.active
        return await self.apply(compiled)

    async def refresh_from_database(self) -> None:
        """Another replica activated a set: adopt it."""
        async with self.pool.acquire() as conn:
            stored = await rule_store.active(conn)
        if stored is None or (self.active is not None and stored["version"] == self.active.version):
            return
        try:
            compiled = compile_rules(stored["source"], stored["filename"], targets=self.targets)
        except RuleCompileError as exc:
            log.error("rules.refresh_failed", version=stored["version"], error=str(exc))
            return
        self.active = ActiveRules(stored["version"], compiled)
        log.info("rules.refreshed", version=stored["version"])

    async def _store(self, compiled: CompiledRuleSet) -> ActiveRules:
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                row = await rule_store.activate(
                    conn, source=compiled.source, filename=compiled.filename, sha256=compiled.sha256,
                    rule_names=[r.name for r in compiled.rules],
                )
        return ActiveRules(row["version"], compiled)
