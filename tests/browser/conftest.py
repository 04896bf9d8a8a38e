"""The console in a real browser: Debian's Chromium driven by Playwright (never a downloaded browser),
against a real server with training workers and real data made through the public gRPC API.

One server and one data set per module (training takes seconds); each test opens its own browser
context. Screenshots go to the test's tmp folder; with CLOSEDLOOP_CONSOLE_SCREENSHOTS=1 the page
tours also refresh the README's pictures in docs/console/.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass, field

import asyncpg
import pytest

from closedloop import AsyncClient
from closedloop.server.api.auth import new_token_line
from closedloop.server.app import create_server

from ..acceptance.conftest import make_settings
from ..conftest import _with_database

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run installs it): "
                "the console's browser tests need it", allow_module_level=True)

# A payload for every string field a client can fill: shown as text, it executes nothing and adds no
# element (the onerror and the <script> would both be visible in the DOM if escaping failed).
XSS = '<script>window.__xss=1</script><img src=x onerror=window.__xss=2>'

MODEL = {
    "model_id": "fx-console", "enabled": True,
    "training": {"estimator": "linear_model.SGDClassifier",
                 "params": {"loss": "log_loss", "alpha": 0.0005, "random_state": 0},
                 "synthetic": {"seed": 11, "drift": 0.9, "rows": 2000},
                 "target": "direction", "metric": "accuracy", "holdout_fraction": 0.25, "promotion_margin": 0.002},
}
OTHER_MODEL = {**MODEL, "model_id": "eq-hidden"}

RULES = f'''# {XSS}
rule drift_auto_retrain "{XSS}":
    when type == "drift" and metrics.drift_score > 0.25 and labels.desk != "{XSS}"
    then retrain full priority high cooldown 1s

rule risk_retrain:
    when type == "risk" and metrics.risk_score > 80
    then retrain full priority critical cooldown 1s
'''


@dataclass
class Console:
    url: str
    target: str
    tokens: dict[str, str]
    alert_id: str = ""
    other_alert_id: str = ""
    job_ids: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
async def module_database(postgres_server_url, template_database):
    name = "closedloop_b_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(postgres_server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
        yield _with_database(postgres_server_url, name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def finish(client: AsyncClient, job_id: str):
    last = None
    async for job in client.watch_job(job_id):
        last = job
    return last


async def _make_data(client: AsyncClient, console: Console) -> None:
    """Two models, two trained versions of one, a drift alert that retrained it, a rollback, two rule
    set versions, and the XSS payload in every free-text field the API takes."""
    await client.apply_rules(RULES.replace("cooldown 1s\n\nrule risk", "cooldown 1s\n\n# first\nrule risk"),
                             filename=f"first-{XSS}.rules")
    await client.apply_rules(RULES, filename=f"desk-{XSS}.rules")
    for model in (MODEL, OTHER_MODEL):
        await client.register_model(model)
    first = await finish(client, (await client.submit_retrain("fx-console", reason=f"initial {XSS}")).id)
    console.job_ids.append(first.id)
    alert = await client.create_alert("fx-console", "drift", "high",
                                      metrics={"drift_score": 0.45, "psi": 0.31, "feature_ks": 0.12},
                                      labels={"desk": "fx", "note": XSS}, source=f"monitor {XSS}")
    console.alert_id = alert.id
    retrain = await finish(client, alert.actions[0].job_id)
    console.job_ids.append(retrain.id)
    await client.create_alert("fx-console", "drift", "medium", metrics={"drift_score": 0.12, "psi": 0.05})
    await client.create_alert("fx-console", "performance", "low", metrics={"performance_drop": 0.02})
    other = await client.create_alert("eq-hidden", "drift", "high", metrics={"drift_score": 0.3},
                                      labels={"desk": "equities"})
    console.other_alert_id = other.id
    await finish(client, other.actions[0].job_id)
    if retrain.promoted:
        await client.rollback_model("fx-console", 1, reason=f"rollback {XSS}")


@pytest.fixture(scope="module")
async def console(module_database, tmp_path_factory):
    folder = tmp_path_factory.mktemp("console")
    tokens, lines = {}, []
    for name, roles, models in [("ops", "operator,ingest", ()), ("reader", "read", ()), ("fx-reader", "read", ("fx-*",)),
                                ("ingester", "ingest", ())]:
        tokens[name], line = new_token_line(roles, name, models)
        lines.append(line)
    (folder / "tokens").write_text("\n".join(lines) + "\n")
    settings = make_settings(module_database, folder, run_workers=True, workers=1, job_lease=10.0,
                             auth_tokens=folder / "tokens", http_listen="127.0.0.1:0")
    server, port = await create_server(settings)
    try:
        result = Console(url=f"http://127.0.0.1:{server.http.port}", target=f"127.0.0.1:{port}", tokens=tokens)
        async with AsyncClient(result.target, token=tokens["ops"], timeout=60) as client:
            await _make_data(client, result)
        yield result
    finally:
        await server.stop(2)


@pytest.fixture(scope="module")
async def browser():
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            await b.close()


class PageWatch:
    """Everything a page complains about: console errors, uncaught exceptions, CSP reports, dialogs."""

    def __init__(self, page) -> None:
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on("dialog", lambda d: self.errors.append(f"dialog: {d.message}"))


@pytest.fixture
async def reader_page(browser, console):
    """A page whose every request carries the read token (as a tool or proxy would send it)."""
    context = await browser.new_context(viewport={"width": 1366, "height": 900},
                                        extra_http_headers={"Authorization": f"Bearer {console.tokens['reader']}"})
    page = await context.new_page()
    page.watch = PageWatch(page)
    try:
        yield page
    finally:
        await context.close()


@pytest.fixture
def shots(tmp_path):
    """save(page, name): a full-page screenshot in the test's tmp folder (and docs/console/ on request)."""
    docs = os.environ.get("CLOSEDLOOP_CONSOLE_SCREENSHOTS") == "1"
    root = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "console")

    async def save(page, name: str) -> None:
        await page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
        if docs:
            os.makedirs(root, exist_ok=True)
            await page.screenshot(path=os.path.join(root, f"{name}.png"), full_page=False)

    return save
