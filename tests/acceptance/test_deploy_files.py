"""deploy/: every PromQL expression of the dashboard and the rules names metrics the server exports,
and promtool accepts the rules (and the dashboard's expressions) when it is installed."""

from __future__ import annotations

import json
import pathlib
import re
import shutil
import subprocess

import aiohttp
import pytest
import yaml

from .conftest import make_settings

DEPLOY = pathlib.Path(__file__).resolve().parents[2] / "deploy"
RULE_FILES = sorted((DEPLOY / "prometheus").glob("*-rules.yml"))
# Series the files may name that closedloop does not export: Prometheus' own, and the example
# exporter of a trading desk (deploy/prometheus/model-drift-rules.yml).
EXTERNAL = {"up", "model_drift_score"}
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "gauge": ("",), "summary": ("", "_sum", "_count", "_created")}
# Grafana's variables, replaced to give promtool plain PromQL.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$instance": ".*"}


def rule_expressions() -> list[str]:
    return [rule["expr"] for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "closedloop.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [re.sub(r"^label_values\((\w+).*", r"\1", v["query"]) for v in dashboard["templating"]["list"]
              if v["type"] == "query"]
    return exprs


def metric_names(expr: str) -> set[str]:
    """The closedloop (and EXTERNAL) series an expression names; label names inside braces and
    by/without lists, and strings, are taken out first."""
    without_labels = re.sub(r"\{[^}]*\}", "{}", re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr))
    without_strings = re.sub(r'"[^"]*"', '""', without_labels)
    names = set()
    for token in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_strings):
        if token.startswith("closedloop_") or token in EXTERNAL:
            names.add(token)
    return names


async def exported_series_names(server) -> set[str]:
    """Every series name the server's /metrics can carry, from its # TYPE lines (labelled families
    without samples yet are announced too)."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{server.http.port}/metrics") as r:
            text = await r.text()
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split()
            if kind == "counter":  # announced as name_total by the text format
                family = family.removesuffix("_total")
            names |= {family + suffix for suffix in SUFFIXES[kind]}
    return names


@pytest.fixture
def server_settings(database_url, tmp_path):
    return make_settings(database_url, tmp_path, http_listen="127.0.0.1:0")


def test_the_files_hold_expressions():
    assert len(RULE_FILES) == 2
    assert {"ClosedloopDown", "ClosedloopQueueWaitTooLong", "ClosedloopRetrainsFailing",
            "ClosedloopNotificationsDeadLettered"} <= {
        r["alert"] for p in RULE_FILES for g in yaml.safe_load(p.read_text())["groups"] for r in g["rules"]}
    assert len(dashboard_expressions()) >= 10
    assert metric_names('sum by (le) (rate(closedloop_x_bucket{method="CreateAlert"}[5m])) > up') == {
        "closedloop_x_bucket", "up"}


async def test_every_expression_names_exported_metrics(server):
    exported = await exported_series_names(server) | EXTERNAL
    for expr in rule_expressions() + dashboard_expressions():
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        assert names <= exported, f"{expr!r} names {sorted(names - exported)}, not exported"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (Debian package prometheus)")
def test_promtool_accepts_the_rules_and_the_dashboard_queries(tmp_path):
    subprocess.run(["promtool", "check", "rules", *map(str, RULE_FILES)], check=True, capture_output=True)
    # The dashboard's queries as recording rules: promtool parses each one.
    records = []
    for i, expr in enumerate(dashboard_expressions()):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        records.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
