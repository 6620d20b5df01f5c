"""The status page (/status) in a real headless browser: Debian's Chromium driven by Playwright (no
browser download: .ci/run installs /usr/bin/chromium). The page asks for the key, keeps it in
sessionStorage only, and shows what /api/status says; a screenshot goes to the test's output, and
with CDP_UPDATE_DOCS=1 to docs/status-page.png (the README shows it)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.stack import start_stack

pytestmark = pytest.mark.timeout(120)

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ADMIN_KEY = "sk-admin-status-page-1"
DOCS_SHOT = Path(__file__).resolve().parents[2] / "docs" / "status-page.png"


@pytest.fixture(scope="module")
def run(fake):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
    stack = start_stack("memory", fake, PROXY_ADMIN_SECRET=ADMIN_KEY, CHANNEL_AUTO_DEL_TIME="120")
    yield stack
    stack.stop()


def _traffic(stack) -> None:
    with openai.OpenAI(base_url=stack.url + "/v1", api_key=ADMIN_KEY, max_retries=0) as client:
        for text in ("hello", "how are you"):
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": text}])
        chunks = list(client.chat.completions.create(
            model="gpt-4o", stream=True, messages=[{"role": "user", "content": "stream please"}]))
        assert chunks
        with pytest.raises(openai.APIStatusError):  # Coze's "service" error text: a failed request
            client.chat.completions.create(model="gpt-4o", messages=[
                {"role": "user", "content": "fail [[sim:error=other]]"}])


def test_status_page_shows_the_status_api(run, tmp_path):
    from playwright.sync_api import sync_playwright

    _traffic(run)
    api = httpx.get(run.url + "/api/status", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(run.url + "/status")
            page.wait_for_selector("#key", state="visible")
            source = page.content()
            page.fill("#key", "wrong-key")
            page.click("#login-button")
            # a selector wait, not wait_for_function: the page's CSP forbids the eval that one uses
            page.wait_for_selector("#login-error:not(:empty)")
            assert "admin key" in page.text_content("#login-error")
            page.fill("#key", ADMIN_KEY)
            page.click("#login-button")
            page.wait_for_selector("#page", state="visible")
            page.wait_for_selector("#recent tbody tr td")
            # the key: in sessionStorage, never in the URL or the page
            assert page.evaluate("sessionStorage.getItem('cdp-status-key')") == ADMIN_KEY
            assert ADMIN_KEY not in page.url and ADMIN_KEY not in page.content() and ADMIN_KEY not in source
            assert page.text_content("#gateway-state") == api["gateway"]["state"] == "ready"
            assert page.text_content("#uptime").endswith("s")
            assert int(page.text_content("#channels-used")) == api["temporary_channels"]["count"] == 4
            assert int(page.text_content("#channels-limit")) == 500
            accounts = page.eval_on_selector_all(
                "#accounts tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")
            assert [(a[0], a[1], int(a[4])) for a in accounts] == [
                (a["account"], a["health"], a["requests_today"]) for a in api["accounts"]]
            assert sum(a["requests_today"] for a in api["accounts"]) == 4
            bots = page.eval_on_selector_all("#bots tbody tr", "rows => rows.map(r => r.cells[0].textContent)")
            assert bots == [b["coze_bot_id"] for b in api["bots"]]
            recent = page.eval_on_selector_all(
                "#recent tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")
            chats = [r for r in api["recent_requests"] if r["route"] == "/v1/chat/completions"]
            assert [(r[0], r[3], r[4], r[7]) for r in recent if r[2] == "/v1/chat/completions"] == [
                (r["id"], r["model"], str(r["status"]), r["error"] or "—") for r in chats]
            assert [r["error"] for r in chats] == ["service", None, None, None]
            # the chart: a TTFT point per minute with answers, a red bar per minute with errors
            points = [h for h in api["history"] if h["ttft_avg"] is not None]
            assert page.locator("#chart circle.ttft").count() == len(points) >= 1
            errors = page.eval_on_selector_all("#chart rect.errors", "rs => rs.map(r => +r.dataset.errors)")
            assert sum(errors) == sum(h["errors"] for h in api["history"]) >= 1
            shot = tmp_path / "status-page.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            if os.environ.get("CDP_UPDATE_DOCS"):  # refresh the README's screenshot on request only
                shutil.copyfile(shot, DOCS_SHOT)
            # forgetting the key returns to the form
            page.click("#logout")
            page.wait_for_selector("#key", state="visible")
            assert page.evaluate("sessionStorage.getItem('cdp-status-key')") is None
        finally:
            browser.close()


def test_status_page_is_static_and_self_contained(run):
    r = httpx.get(run.url + "/status")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    page = r.text.replace("http://www.w3.org/2000/svg", "")  # a namespace name, never fetched
    assert "http://" not in page and "https://" not in page and "<link" not in page  # nothing from a CDN
    assert "<script src" not in page
    assert "sessionStorage" in r.text and "Authorization" in r.text
