"""The active rule set of this process: compiled once, swapped atomically, kept in step with the database.

A swap is one attribute assignment of an immutable (version, CompiledRuleSet) pair, so an alert is
always evaluated against one whole rule set, never half of two. Sources of a new set: ApplyRules,
SIGHUP (re-read --rules), and a NOTIFY from another replica that applied a set.
"""

from __future__ import annotations

import hashlib
import pathlib
from dataclasses import dataclass

import asyncpg
import structlog

from closedloop.dsl import CompiledRuleSet, RuleCompileError, check, compile_rules, load_default_rules

from ..store import rules as rule_store

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ActiveRules:
    version: int
    ruleset: CompiledRuleSet


def read_rules_path(path: pathlib.Path) -> tuple[str, str]:
    """(source, filename) of a rule file, or of a folder's *.rules files joined in name order.

    Each file of a folder is checked on its own first, so an error points at its own file and
    line rather than at a line of the joined text.
    """
    if path.is_dir():
        files = sorted(path.glob("*.rules"))
        if not files:
            raise FileNotFoundError(f"{path}: no *.rules files in this folder")
        texts = [(f, f.read_text(encoding="utf-8")) for f in files]
        errors = [d for f, text in texts for d in check(text, str(f)).diagnostics if d.severity == "error"]
        if errors:
            raise RuleCompileError(errors)
        parts = [f"# --- {f.name}\n{text}" for f, text in texts]
        return "\n".join(parts), str(path)
    return path.read_text(encoding="utf-8"), str(path)


def sha256(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


class RuleEngine:
    def __init__(self, pool: asyncpg.Pool, rules_path: pathlib.Path | None) -> None:
        self.pool = pool
        self.rules_path = rules_path
        self.active: ActiveRules | None = None

    async def load_at_start(self) -> ActiveRules:
        """--rules wins; without it the stored active set; without that, the bundled defaults."""
        async with self.pool.acquire() as conn:
            stored = await rule_store.active(conn)
        if self.rules_path is not None:
            source, filename = read_rules_path(self.rules_path)
        elif stored is not None:
            source, filename = stored["source"], stored["filename"]
        else:
            source, filename = load_default_rules()
        compiled = compile_rules(source, filename)  # RuleCompileError propagates: bad --rules stops start-up
        if stored is not None and stored["sha256"] == compiled.sha256:
            self.active = ActiveRules(stored["version"], compiled)
        else:
            self.active = await self._store(compiled)
        log.info("rules.loaded", version=self.active.version, rules=len(compiled.rules), filename=filename)
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
            source, filename = read_rules_path(self.rules_path)
            if not source.strip():
                # Most likely a file caught half-written by an editor or deploy; an intentionally
                # empty rule set can still be applied with ApplyRules.
                raise OSError(f"{filename} is empty")
            compiled = compile_rules(source, filename)
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
            compiled = compile_rules(stored["source"], stored["filename"])
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
