"""Issue 16: each console page in Chromium shows the loop's data without console errors, the live
model page follows a job without reloading, stored <script> payloads show as text, and the console
refuses a missing, wrong or under-privileged token (and keeps a scoped token to its models)."""

from __future__ import annotations

import re

import pytest

from closedloop import AsyncClient

from .conftest import XSS, finish

pytestmark = pytest.mark.slow

CSP_SCRIPT = "script-src 'self'"


async def open_page(page, url: str):
    response = await page.goto(url)
    assert response.status == 200, await page.content()
    assert CSP_SCRIPT in response.headers["content-security-policy"]
    await page.wait_for_load_state("networkidle")
    return response


def no_errors(page) -> None:
    assert page.watch.errors == []


async def test_overview_shows_alerts_jobs_models_and_promotions(reader_page, console, shots):
    page = reader_page
    await open_page(page, console.url + "/")
    await page.wait_for_selector("[data-chart='alerts-per-hour'] .uplot")
    models = page.get_by_role("table", name=re.compile("latest drift or performance"))
    assert await models.get_by_role("link", name="fx-console").count() == 1
    assert await models.get_by_role("link", name="eq-hidden").count() == 1
    assert "crossed" in await models.inner_text()
    assert await page.locator("[data-figure='queued']").inner_text() == "0"
    decisions = await page.get_by_role("table", name=re.compile("Decisions among")).inner_text()
    assert "QUEUED" in decisions
    assert "rollback" in await page.get_by_role("table", name=re.compile("promotions and rollbacks")).inner_text()
    await page.click("text=7d")
    await page.wait_for_selector("[data-chart='alerts-per-hour'] .uplot")
    await shots(page, "overview")
    no_errors(page)


async def test_model_page_shows_versions_profile_drift_alerts_jobs_and_rollback(reader_page, console, shots):
    page = reader_page
    await open_page(page, console.url + "/models/fx-console")
    await page.wait_for_selector("[data-chart='versions'] .uplot")
    versions = await page.get_by_role("table", name="Versions, newest first").inner_text()
    assert re.search(r"^1\b", versions, re.M) and re.search(r"^2\b", versions, re.M)
    assert "Training rows" in await page.locator("#profile-h + dl").inner_text()
    heatmap = page.locator("svg.heatmap")
    assert await heatmap.count() == 1 and "drift_score" in await heatmap.text_content()
    alerts = await page.get_by_role("table", name=re.compile("Alerts, newest first")).inner_text()
    assert "drift_auto_retrain: retrain queued" in alerts
    jobs = page.get_by_role("table", name="Newest retraining jobs")
    for job_id in console.job_ids:
        assert await jobs.locator(f"[data-job='{job_id}']").count() == 1
    assert "closedloop models rollback fx-console --version" in await page.locator("pre.command").inner_text()
    await shots(page, "model")
    no_errors(page)


async def test_rules_page_shows_source_report_history_and_diff(reader_page, console, shots):
    page = reader_page
    await open_page(page, console.url + "/rules")
    source = page.locator("pre.rules-source")
    assert "rule drift_auto_retrain" in await source.inner_text()
    assert await source.locator(".tok-keyword").count() > 5
    row = page.locator("tr[data-rule='drift_auto_retrain']")
    assert re.fullmatch(r"\d+\.\d%", await row.locator("[data-fp-rate]").inner_text())
    assert await row.locator("svg.sparkline").count() == 1
    await shots(page, "rules")
    history = page.get_by_role("table", name="Stored rule sets, newest first")
    await history.get_by_role("link").first.click()
    await page.wait_for_selector("pre.diff")
    assert "# first" in await page.locator("pre.diff .diff-del").inner_text()
    no_errors(page)


async def test_alert_page_shows_metrics_labels_clauses_and_the_job(reader_page, console, shots):
    page = reader_page
    await open_page(page, console.url + f"/alerts/{console.alert_id}")
    assert "desk" in await page.get_by_role("table", name="Labels sent with the alert").inner_text()
    assert "0.45" in await page.get_by_role("table", name="Metrics sent with the alert").inner_text()
    drift = page.locator("article.evaluation[data-rule='drift_auto_retrain']")
    assert "match" in await drift.locator("h3").inner_text()
    clauses = await drift.locator("ul.clauses").inner_text()
    assert re.search(r"metrics\.drift_score > 0\.25\s+true", clauses)
    quiet = page.locator("article.evaluation[data-rule='risk_retrain']")
    assert re.search(r'type == "risk"\s+false', await quiet.inner_text())
    decisions = await page.get_by_role("table", name="What the loop decided for this alert").inner_text()
    assert "queued" in decisions and f"job {console.job_ids[1]}" in decisions
    await shots(page, "alert")
    no_errors(page)


async def test_live_model_page_follows_a_job_without_reloading(reader_page, console):
    page = reader_page
    await open_page(page, console.url + "/models/fx-console")
    await page.evaluate("window.__stayed = true")
    async with AsyncClient(console.target, token=console.tokens["ops"], timeout=60) as client:
        job = await client.submit_retrain("fx-console", reason="live refresh")
        state = page.locator(f"[data-job='{job.id}'] [data-job-state]")
        await state.wait_for(timeout=30_000)  # the new job appears without a reload
        await finish(client, job.id)
    await page.wait_for_function(
        f"document.querySelector(\"[data-job='{job.id}'] [data-job-state]\").textContent === 'succeeded'",
        timeout=30_000)
    assert await page.evaluate("window.__stayed") is True
    assert (await page.locator("[data-live-status]").inner_text()).startswith("Live: updated")
    no_errors(page)


async def test_script_payloads_in_every_string_field_show_as_text(reader_page, console):
    page = reader_page
    for path, must_show in [("/", "rollback " + XSS), (f"/alerts/{console.alert_id}", "monitor " + XSS),
                            ("/models/fx-console", "initial " + XSS), ("/rules", f"desk-{XSS}.rules"),
                            ("/rules?diff=2", XSS)]:
        await open_page(page, console.url + path)
        assert must_show in await page.locator("main").inner_text(), path
        if path == f"/alerts/{console.alert_id}":
            assert XSS in await page.get_by_role("table", name="Labels sent with the alert").inner_text()
        assert await page.evaluate("window.__xss") is None, path
        assert await page.evaluate("document.images.length") == 0, path
        scripts = await page.evaluate("[...document.scripts].map(s => s.src ? 'src' : s.type)")
        assert set(scripts) <= {"src", "application/json"}, (path, scripts)
    no_errors(page)


async def test_missing_wrong_or_unprivileged_tokens_are_refused(browser, console):
    context = await browser.new_context()
    try:
        page = await context.new_page()
        for path in ["/", "/models/fx-console", "/rules", f"/alerts/{console.alert_id}",
                     "/console/live/overview.json"]:
            response = await page.goto(console.url + path)
            assert response.status == 401, path
        assert await page.get_by_role("link", name="Sign in with a token").count() == 1
        for token, status in [("not-a-token", 401), (console.tokens["ingester"], 403)]:
            response = await context.request.get(console.url + "/", headers={"Authorization": f"Bearer {token}"})
            assert response.status == status
        # The sign-in form: a wrong token is refused, a read token lands on the overview.
        await page.goto(console.url + "/login")
        await page.get_by_label("Token").fill("wrong")
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_url(console.url + "/")
        assert "unknown token" in await page.locator("main").inner_text()
        await page.get_by_role("link", name="Sign in with a token").click()
        await page.get_by_label("Token").fill(console.tokens["reader"])
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_url(console.url + "/")
        assert await page.get_by_role("heading", name="Overview").count() == 1
    finally:
        await context.close()


async def test_a_scoped_token_sees_only_its_models(browser, console):
    context = await browser.new_context(extra_http_headers={"Authorization": f"Bearer {console.tokens['fx-reader']}"})
    try:
        page = await context.new_page()
        await open_page(page, console.url + "/")
        text = await page.locator("main").inner_text()
        assert "fx-console" in text and "eq-hidden" not in text
        for path in ["/models/eq-hidden", f"/alerts/{console.other_alert_id}", "/console/live/model.json?model=eq-hidden"]:
            response = await page.goto(console.url + path)
            assert response.status == 404, path
    finally:
        await context.close()


async def test_bad_parameters_get_a_clear_answer(reader_page, console):
    request = reader_page.context.request
    for path, status, says in [("/?range=1y", 400, "range must be one of 24h, 7d"),
                               ("/rules?days=99", 400, "days must be a whole number from 1 to 30"),
                               ("/models/fx-console?before=junk", 400, "page link is not valid"),
                               ("/rules?diff=999", 404, "no rule set version 999"),
                               ("/alerts/abc", 404, "no alert &#39;abc&#39;"), ("/models/nope", 404, "no model &#39;nope&#39;")]:
        response = await request.get(console.url + path)
        assert response.status == status, path
        assert says in await response.text(), path
