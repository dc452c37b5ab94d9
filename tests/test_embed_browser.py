"""An embedded panel in headless Chromium: a page served from another origin (its own HTTP server on
another port) iframes the KPI strip and a chart by their signed links; they render and update live.
A page on an origin FRAME_ANCESTORS does not list gets nothing."""

from __future__ import annotations

import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests import livesrv

pytestmark = pytest.mark.browser


class HostPage:
    """The platform's admin page: another origin (port) serving one HTML page with the iframes."""

    def __init__(self, html: str, port: int = 0):
        body = html.encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def host_port():
    return livesrv.free_port()


@pytest.fixture(scope="module")
def server(tmp_path_factory, host_port):
    port = livesrv.free_port()
    srv = livesrv.start(
        tmp_path_factory.mktemp("embed"),
        port=port,
        extra_env={
            "FRAME_ANCESTORS": f"http://127.0.0.1:{host_port}",
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        },
    )
    yield srv
    livesrv.stop(srv)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=livesrv.CHROMIUM, args=livesrv.CHROMIUM_ARGS, headless=True
        )
        yield browser
        browser.close()


def _link(server, panel: str) -> str:
    resp = httpx.get(
        f"{server.url}/api/embed-link",
        params={"panel": panel, "range": "1h", "ttl": 600},
        headers={"X-API-Key": server.api_key},
    )
    assert resp.status_code == 200, resp.text
    return resp.json()["url"]


def _ingest(server, n: int) -> None:
    events = [
        {
            "event_id": f"emb-{uuid.uuid4().hex[:16]}",
            "event_type": "session_started",
            "session_id": f"s-{uuid.uuid4().hex[:8]}",
            "student_id": f"stu_e{i}",
            "tutor_id": "tut_e",
        }
        for i in range(n)
    ]
    resp = httpx.post(
        f"{server.url}/api/ingest",
        json={"events": events},
        headers={"Authorization": f"Bearer {server.api_key}"},
    )
    assert resp.status_code == 202, resp.text


def test_panels_render_and_update_inside_another_origins_iframe(server, browser, host_port):
    kpis, chart = _link(server, "kpis"), _link(server, "events")
    host = HostPage(
        "<!doctype html><title>Platform admin</title><h1>Platform admin</h1>"
        f'<iframe id="kpis" src="{kpis}" width="1000" height="420"></iframe>'
        f'<iframe id="chart" src="{chart}" width="700" height="320"></iframe>',
        port=host_port,  # the origin FRAME_ANCESTORS names
    )
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(10_000)
        page.goto(host.url)
        assert page.url.startswith(f"http://127.0.0.1:{host_port}/")
        frame = page.frame_locator("#kpis")
        frame.locator('[data-ws-state="open"]').wait_for()
        before = frame.locator('[data-kpi="events_per_min"]').text_content().strip()
        assert frame.locator('[data-kpi="sessions_today"]').is_visible()
        chart_frame = page.frame_locator("#chart")
        chart_frame.locator('[data-ws-state="open"]').wait_for()
        chart_frame.locator('canvas[data-chart="chart-events"]').wait_for()

        _ingest(server, 5)
        frame.locator('[data-kpi="events_per_min"]').filter(has_not_text=before).wait_for(timeout=10_000)
        inner = page.frame(url=lambda u: "/embed/events/" in u)
        inner.wait_for_function(
            "() => { const c = Chart.getChart(document.querySelector('canvas[data-chart=\"chart-events\"]'));"
            " return c && c.data.datasets[0].data.some(v => v > 0); }",
            timeout=10_000,
        )
    finally:
        context.close()
        host.close()


def test_an_origin_not_in_frame_ancestors_gets_nothing(server, browser):
    host = HostPage(f'<!doctype html><iframe id="kpis" src="{_link(server, "kpis")}"></iframe>')
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(host.url)  # a free port FRAME_ANCESTORS does not name
        page.wait_for_timeout(1_500)
        frame = page.frame_locator("#kpis")
        assert frame.locator('[data-kpi="sessions_today"]').count() == 0
        # The dashboard itself cannot be framed from anywhere.
        page.set_content(f'<iframe id="dash" src="{server.url}/accounts/login/"></iframe>')
        page.wait_for_timeout(1_000)
        assert page.frame_locator("#dash").locator("input[name=username]").count() == 0
    finally:
        context.close()
        host.close()
