"""End to end in headless Chromium: log in, POST an event, watch a KPI change without a reload."""

from __future__ import annotations

import httpx
import pytest

from tests import livesrv

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = livesrv.start(tmp_path_factory.mktemp("live"))
    yield srv
    livesrv.stop(srv)


@pytest.fixture
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=livesrv.CHROMIUM, args=livesrv.CHROMIUM_ARGS, headless=True
        )
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(10_000)
        yield page
        browser.close()


def login(page, server):
    page.goto(f"{server.url}/")
    assert "/accounts/login/" in page.url
    page.fill("input[name=username]", server.username)
    page.fill("input[name=password]", server.password)
    page.click("button[type=submit]")
    page.wait_for_selector('[data-ws-state="open"]')


def test_kpi_changes_live_after_a_post(server, page):
    login(page, server)
    page.evaluate("window.__noReload = true")
    before = page.text_content('[data-kpi="events_per_min"]')
    body = {
        "events": [{"event_type": "customer_health_update", "student_id": "stu_live", "health_score": 35}] * 1
    }
    resp = httpx.post(
        f"{server.url}/api/ingest", json=body, headers={"Authorization": f"Bearer {server.api_key}"}
    )
    assert resp.status_code == 202
    page.wait_for_function(
        "before => document.querySelector('[data-kpi=\"events_per_min\"]').textContent.trim() !== before.trim()",
        arg=before,
        timeout=5_000,
    )
    assert page.evaluate("window.__noReload") is True
    page.wait_for_selector('[data-alert-id][data-severity="critical"]', timeout=5_000)
    assert page.text_content('[data-kpi="open_alerts"]').strip() == "1"


def test_server_stops_cleanly_on_sigterm(tmp_path):
    srv = livesrv.start(tmp_path)
    resp = httpx.post(
        f"{srv.url}/api/ingest",
        json={"event_type": "ib_call_logged", "student_id": "s"},
        headers={"Authorization": f"Bearer {srv.api_key}"},
    )
    assert resp.status_code == 202
    livesrv.stop(srv)
    assert srv.proc.returncode == 0
    assert "stopped" in (tmp_path / "server.log").read_text()
