"""The console's pure rendering helpers: escaping in the highlighter, the diff and the SVG charts,
and the shapes the charts are given."""

from __future__ import annotations

import datetime as dt

from closedloop.server.http.console.overview import headline_score, hourly_series
from closedloop.server.http.console.rule_text import diff_lines, highlight
from closedloop.server.http.console.svg import heatmap, sparkline

PAYLOAD = '<script>alert(1)</script>&"'


def test_highlight_colours_tokens_and_escapes_everything():
    html = str(highlight(f'# {PAYLOAD}\nrule r "{PAYLOAD[:-1]}":\n    when metrics.x > 0.5\n    then retrain full\n'))
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert '<span class="tok-keyword">rule</span>' in html and '<span class="tok-number">0.5</span>' in html
    assert '<span class="tok-comment"># &lt;script&gt;' in html and '<span class="tok-op">&gt;</span>' in html


def test_diff_lines_classify_the_unified_diff():
    kinds = dict((line, kind) for kind, line in diff_lines("a\nb\n", "a\nc\n", "v1", "v2"))
    assert kinds["-b"] == "del" and kinds["+c"] == "add" and kinds[" a"] == "same" and kinds["--- v1"] == "file"


def test_svg_charts_escape_their_labels():
    svg = str(heatmap([PAYLOAD], ["#1"], {(PAYLOAD, "#1"): 0.5}, PAYLOAD))
    assert "<script>" not in svg and svg.count("<rect") == 1 and "&lt;script&gt;" in svg
    line = str(sparkline([0, 2, 1], PAYLOAD))
    assert "<script>" not in line and "<polyline" in line


def test_hourly_series_fills_missing_hours_with_zero():
    since = dt.datetime(2026, 1, 1, 10, 30, tzinfo=dt.timezone.utc)
    rows = [{"hour": dt.datetime(2026, 1, 1, 11, tzinfo=dt.timezone.utc), "alert_type": "drift", "n": 3}]
    chart = hourly_series(rows, since, since + dt.timedelta(hours=2))
    assert len(chart["x"]) == 3 and chart["series"] == [{"label": "drift", "values": [0, 3, 0]}]


def test_headline_score_prefers_the_named_scores():
    assert headline_score({"psi": 0.2, "drift_score": 0.4}) == ("drift_score", 0.4)
    assert headline_score({"a": 0.1, "b": -0.7}) == ("b", -0.7)
    assert headline_score({}) is None
