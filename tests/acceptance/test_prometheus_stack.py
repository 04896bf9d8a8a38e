"""Against the real thing: Debian's Prometheus and Alertmanager feed the loop, and scrape it.

Prometheus (1 s scrape and evaluation) scrapes closedloop's /metrics and a tiny exporter publishing
`model_drift_score{model_id="fx-prom"}`; its rule `model_drift_score > 0.25` fires; Alertmanager
(group_wait 1 s) posts the alert to closedloop's receiver; the default drift rule queues a full
retrain, which a real worker runs and promotes. Prometheus' targets API must show closedloop's
scrape healthy and its label-names API every metric closedloop exported.

`.ci/run` installs the packages when missing; the test skips (saying why) only without the binaries.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import shutil
import signal
import subprocess
import textwrap
import time

import aiohttp
import pytest
from aiohttp import web

from closedloop import AsyncClient
from closedloop.server.app import create_server
from closedloop.v1 import retrain_pb2

from .conftest import make_settings
from .helpers import free_port

PROMETHEUS = "/usr/bin/prometheus"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
MODEL = {
    "model_id": "fx-prom", "enabled": True,
    "training": {"estimator": "linear_model.SGDClassifier", "params": {"loss": "log_loss", "random_state": 0},
                 "synthetic": {"seed": 5, "drift": 0.3, "rows": 1500}, "target": "direction",
                 "metric": "accuracy", "holdout_fraction": 0.25, "promotion_margin": 0.0},
}
# Every wait below is bounded: the whole scenario takes ~15 s here; these leave room for a busy machine.
STACK_TIMEOUT_S = 120

pytestmark = [
    pytest.mark.skipif(not (os.access(PROMETHEUS, os.X_OK) and os.access(ALERTMANAGER, os.X_OK)),
                       reason=f"{PROMETHEUS} and {ALERTMANAGER} are not installed (Debian packages prometheus "
                              "and prometheus-alertmanager; .ci/run installs them)"),
    pytest.mark.timeout(STACK_TIMEOUT_S + 60),
]


async def start_exporter(port: int) -> web.AppRunner:
    """A model-monitoring exporter as a trading desk might run one."""
    async def metrics(request):
        return web.Response(text='# TYPE model_drift_score gauge\nmodel_drift_score{model_id="fx-prom"} 0.42\n',
                            content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def write_configs(tmp: pathlib.Path, closedloop_http: int, exporter: int, am_port: int) -> None:
    (tmp / "rules.yml").write_text(textwrap.dedent("""\
        groups:
          - name: model-monitoring
            interval: 1s
            rules:
              - alert: ModelDrift
                expr: model_drift_score > 0.25
                labels: {type: drift, severity: high}
                annotations: {value: "{{ $value }}", summary: "drift on {{ $labels.model_id }}"}
        """))
    (tmp / "prometheus.yml").write_text(textwrap.dedent(f"""\
        global: {{scrape_interval: 1s, evaluation_interval: 1s, scrape_timeout: 900ms}}
        rule_files: [{tmp / 'rules.yml'}]
        alerting:
          alertmanagers: [{{static_configs: [{{targets: ['127.0.0.1:{am_port}']}}]}}]
        scrape_configs:
          - job_name: closedloop
            static_configs: [{{targets: ['127.0.0.1:{closedloop_http}']}}]
          - job_name: model-monitoring
            static_configs: [{{targets: ['127.0.0.1:{exporter}']}}]
        """))
    (tmp / "alertmanager.yml").write_text(textwrap.dedent(f"""\
        route:
          receiver: closedloop
          group_by: [alertname, model_id]
          group_wait: 1s
          group_interval: 1s
          repeat_interval: 1h
        receivers:
          - name: closedloop
            webhook_configs:
              - url: http://127.0.0.1:{closedloop_http}/api/v1/alertmanager
                send_resolved: true
        """))


def start(cmd: list[str], log: pathlib.Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


async def wait_for(what: str, check, deadline: float, logs: list[pathlib.Path]):
    """Poll `check()` (async, returns a truthy value when done) until the deadline."""
    last = None
    while time.monotonic() < deadline:
        try:
            result = await check()
            if result:
                return result
        except (aiohttp.ClientError, OSError, KeyError, ValueError) as exc:
            last = exc
        await asyncio.sleep(0.5)
    tails = "\n".join(f"--- {p.name}:\n{p.read_text(errors='replace')[-3000:]}" for p in logs if p.exists())
    pytest.fail(f"timed out waiting for {what} (last error: {last!r})\n{tails}")


async def test_prometheus_rule_through_alertmanager_retrains_and_promotes(database_url, tmp_path):
    http_port, exporter_port, prom_port, am_port = free_port(), free_port(), free_port(), free_port()
    write_configs(tmp_path, http_port, exporter_port, am_port)
    if shutil.which("promtool"):
        subprocess.run(["promtool", "check", "config", str(tmp_path / "prometheus.yml")], check=True,
                       capture_output=True)
    logs = [tmp_path / "prometheus.log", tmp_path / "alertmanager.log"]
    srv, port = await create_server(make_settings(database_url, tmp_path / "data", http_listen=f"127.0.0.1:{http_port}",
                                                  run_workers=True, workers=1))
    exporter = await start_exporter(exporter_port)
    procs = []
    try:
        procs.append(start([ALERTMANAGER, f"--config.file={tmp_path / 'alertmanager.yml'}",
                            f"--storage.path={tmp_path / 'am-data'}", f"--web.listen-address=127.0.0.1:{am_port}",
                            "--cluster.listen-address="], logs[1]))
        procs.append(start([PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
                            f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                            f"--web.listen-address=127.0.0.1:{prom_port}"], logs[0]))
        deadline = time.monotonic() + STACK_TIMEOUT_S
        async with AsyncClient(f"127.0.0.1:{port}", timeout=30) as client, aiohttp.ClientSession() as http:
            await client.register_model(MODEL)
            prom = f"http://127.0.0.1:{prom_port}"

            async def promoted_job():
                jobs = (await client.list_jobs(model_id="fx-prom")).jobs
                done = [j for j in jobs if j.state == retrain_pb2.JOB_STATE_SUCCEEDED and j.promoted]
                return done[0] if done else None

            job = await wait_for("the retrain queued by Alertmanager's post to promote", promoted_job, deadline, logs)
            assert job.trigger.rule == "drift_auto_retrain" and job.mode == 1  # RETRAIN_MODE_FULL
            alert = await client.get_alert(job.trigger.alert_id)
            assert alert.source == "alertmanager" and alert.type == "drift"
            assert alert.metrics["drift_score"] == pytest.approx(0.42)
            assert alert.labels["alertname"] == "ModelDrift" and alert.labels["job"] == "model-monitoring"
            assert (await client.get_model("fx-prom")).current_version == 1

            async def closedloop_target():
                async with http.get(f"{prom}/api/v1/targets") as r:
                    targets = (await r.json())["data"]["activeTargets"]
                [mine] = [t for t in targets if t["labels"]["job"] == "closedloop"]
                return mine if mine["health"] == "up" and mine["lastError"] == "" else None

            await wait_for("Prometheus to scrape closedloop healthily", closedloop_target, deadline, logs)

            async with http.get(f"http://127.0.0.1:{http_port}/metrics") as r:
                exported = {line.split("{")[0].split(" ")[0] for line in (await r.text()).splitlines()
                            if line and not line.startswith("#")}

            async def all_names_parsed():
                async with http.get(f"{prom}/api/v1/label/__name__/values") as r:
                    known = set((await r.json())["data"])
                return exported <= known

            await wait_for(f"Prometheus to hold every closedloop metric ({len(exported)} names)",
                           all_names_parsed, deadline, logs)
            assert {"closedloop_promotions_total", "closedloop_jobs_finished_total",
                    "closedloop_alerts_ingested_total", "closedloop_decisions_total"} <= exported
    finally:
        for proc in procs:
            stop(proc)
        await exporter.cleanup()
        await srv.stop(2)
