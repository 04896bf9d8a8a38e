"""Every file in tests/dsl/bad/ is a malformed rule file whose header says what the checker must
report: one ``# expect: LINE:COLUMN: [warning: ]MESSAGE`` line per diagnostic. The test asserts
exactly those diagnostics: each at its position with the message substring, and no others."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from closedloop.dsl import check

BAD = Path(__file__).parent / "bad"
EXPECT = re.compile(r"^# expect: (\d+):(\d+): (?:(warning): )?(.+)$")
FILES = sorted(BAD.glob("*.rules"))


def expectations(source: str) -> list[tuple[int, int, str, str]]:
    out = []
    for line in source.splitlines():
        m = EXPECT.match(line)
        if m:
            out.append((int(m[1]), int(m[2]), m[3] or "error", m[4]))
    return out


def test_corpus_is_large_enough():
    assert len(FILES) >= 50
    assert sum(1 for f in FILES if "warning" not in f.read_text()) >= 50


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_bad_file(path: Path):
    source = path.read_text()
    expected = expectations(source)
    assert expected, f"{path.name} has no '# expect:' header"
    result = check(source, path.name)
    got = [(d.line, d.column, d.severity, d.message) for d in result.diagnostics]
    for line, column, severity, text in expected:
        hits = [g for g in got if g[:3] == (line, column, severity) and text in g[3]]
        assert hits, f"{path.name}: expected {severity} at {line}:{column} containing {text!r}; got {got}"
    assert len(got) == len(expected), f"{path.name}: unexpected extra diagnostics: {got}"
    if any(sev == "error" for _, _, sev, _ in expected):
        assert not result.ok
    rendered = result.diagnostics[0].render(source)
    head, source_line, caret = rendered.split("\n")
    assert head.startswith(f"{path.name}:{result.diagnostics[0].line}:{result.diagnostics[0].column}: ")
    assert caret.strip().startswith("^")
