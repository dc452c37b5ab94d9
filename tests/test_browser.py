"""End to end in headless Chromium against the real one-process server (one per module).

Live KPI, alert actions seen by a second browser, reconnect after a server restart with catch-up,
the entity page chart, and that event strings carrying HTML/JS never run as script.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import httpx
import pytest

from tests import livesrv

pytestmark = pytest.mark.browser

XSS_IMG = '<img src=x onerror="window.__xss=1">'
XSS_SCRIPT = "<script>window.__xss=1</script>"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = livesrv.start(tmp_path_factory.mktemp("live"))
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


@pytest.fixture
def new_page(browser):
    contexts = []

    def _new():
        context = browser.new_context()
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(10_000)
        return page

    yield _new
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_page):
    return new_page()


def login(page, server, path: str = "/"):
    page.goto(f"{server.url}{path}")
    assert "/accounts/login/" in page.url
    page.fill("input[name=username]", server.username)
    page.fill("input[name=password]", server.password)
    page.click("button[type=submit]")
    if path == "/":
        page.wait_for_selector('[data-ws-state="open"]')


def ingest(server, *events):
    resp = httpx.post(
        f"{server.url}/api/ingest",
        json={"events": [{"event_id": f"b-{uuid.uuid4().hex[:16]}", **e} for e in events]},
        headers={"Authorization": f"Bearer {server.api_key}"},
    )
    assert resp.status_code == 202, resp.text
    return resp


def history(student_id: str) -> dict:
    """A platform reading of 85 twenty days ago: weeks of history, so the student's next reading is
    judged (a new student is "not enough data yet")."""
    then = (datetime.now(UTC) - timedelta(days=20)).isoformat()
    return {
        "event_type": "customer_health_update",
        "student_id": student_id,
        "health_score": 85,
        "timestamp": then,
    }


def test_kpi_changes_live_after_a_post(server, page):
    login(page, server)
    page.evaluate("window.__noReload = true")
    before = page.text_content('[data-kpi="events_per_min"]')
    ingest(
        server,
        history("stu_live"),
        {"event_type": "customer_health_update", "student_id": "stu_live", "health_score": 35},
    )
    page.wait_for_function(
        "before => document.querySelector('[data-kpi=\"events_per_min\"]').textContent.trim() !== before.trim()",
        arg=before,
        timeout=5_000,
    )
    assert page.evaluate("window.__noReload") is True
    page.wait_for_selector('#alert-feed [data-alert-id][data-severity="critical"]', timeout=5_000)
    assert page.text_content('[data-kpi="open_alerts"]').strip() == "1"


def test_acknowledge_in_one_browser_is_seen_in_another(server, new_page):
    first, second = new_page(), new_page()
    login(first, server)
    login(second, server)
    ingest(
        server,
        history("stu_ack"),
        {"event_type": "customer_health_update", "student_id": "stu_ack", "health_score": 41},
    )
    row = '#alert-feed li[data-alert-id]:has(.id:text-is("stu_ack"))'
    first.wait_for_selector(row)
    second.wait_for_selector(row)
    alert_id = first.get_attribute(row, "data-alert-id")
    second.evaluate("window.__noReload = true")

    first.click(f'{row} button[data-action="acknowledge"]')
    second.wait_for_selector(f'#alert-{alert_id}[data-status="acknowledged"]', timeout=5_000)
    assert second.evaluate("window.__noReload") is True
    assert second.locator(f"#alert-{alert_id}").count() == 1  # replaced, not duplicated

    # The explainability drawer opens from the feed, by keyboard too, and acts on the alert.
    second.focus(f"#alert-{alert_id} a.msg")
    second.keyboard.press("Enter")
    second.wait_for_selector("#panel:not([hidden]) #panel-title:focus")
    assert "Low health score" in second.text_content("#panel-title")
    second.click("#panel-body details.dismiss summary")
    second.select_option("#panel-body select[name=reason]", "known_issue")
    second.fill("#panel-body input[name=note]", "called the student")
    second.click('#panel-body button[data-action="dismiss"]')
    first.wait_for_selector(f'#alert-{alert_id}[data-status="dismissed"]', timeout=5_000)
    second.keyboard.press("Escape")
    assert second.is_hidden("#panel")


def test_range_selector_keeps_the_choice_in_the_url_and_reconnects(server, page):
    login(page, server)
    page.click('nav.ranges a:text-is("7d")')
    page.wait_for_url("**/?range=7d")
    page.wait_for_selector('nav.ranges a[aria-current]:text-is("7d")')
    page.wait_for_selector('#live[ws-connect="/ws/dashboard/?range=7d"]')
    page.wait_for_selector('[data-ws-state="open"]')
    page.select_option("select[name=severity]", "critical")
    page.wait_for_url("**/?range=7d&severity=critical")
    page.wait_for_selector('[data-ws-state="open"]')
    assert page.locator('#alert-feed li[data-alert-id]:not([data-severity="critical"])').count() == 0


def test_entity_page_renders_its_chart(server, page):
    ingest(
        server,
        {
            "event_type": "session_started",
            "session_id": "s-ent",
            "student_id": "stu_ent",
            "tutor_id": "tut_ent",
        },
        {
            "event_type": "session_completed",
            "session_id": "s-ent",
            "student_id": "stu_ent",
            "tutor_id": "tut_ent",
        },
    )
    login(page, server, "/entities/student/stu_ent")
    page.wait_for_url("**/entities/student/stu_ent")
    page.wait_for_function(
        "() => Chart.getChart(document.querySelector('canvas[data-chart=\"entity-history\"]'))"
    )
    total = page.evaluate(
        "() => Chart.getChart(document.querySelector('canvas[data-chart=\"entity-history\"]')).data.datasets[0].data"
        ".reduce((a, b) => a + b, 0)"
    )
    assert total == 1

    # Live: another completed session reaches the open page — figures and chart — without a reload.
    page.wait_for_selector('[data-ws-state="open"]')
    page.evaluate("window.__noReload = true")
    ingest(
        server,
        {"event_type": "session_started", "session_id": "s-ent2", "student_id": "stu_ent", "tutor_id": "tut_ent"},
        {"event_type": "session_completed", "session_id": "s-ent2", "student_id": "stu_ent", "tutor_id": "tut_ent"},
    )  # fmt: skip
    page.wait_for_selector('#entity-live dd:text-is("2 / 2 / 2")', timeout=5_000)
    page.wait_for_function(
        "() => Chart.getChart(document.querySelector('canvas[data-chart=\"entity-history\"]'))"
        ".data.datasets[0].data.reduce((a, b) => a + b, 0) === 2"
    )
    assert page.evaluate("window.__noReload") is True


def test_event_strings_with_html_never_run_as_script(server, page):
    ingest(
        server,
        history(XSS_IMG),
        {"event_type": "customer_health_update", "student_id": XSS_IMG, "health_score": 20},
        {
            "event_type": "session_completed",
            "session_id": XSS_SCRIPT,
            "student_id": XSS_SCRIPT,
            "tutor_id": XSS_IMG,
            "subject": XSS_SCRIPT,
        },
        {
            "event_type": "supply_demand_update",
            "subject": XSS_SCRIPT,
            "region": XSS_IMG,
            "demand_score": 90,
            "supply_score": 10,
        },
    )
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    login(page, server)
    page.wait_for_selector("#alert-feed li[data-alert-id] .id:text-is('" + XSS_IMG.replace("'", "\\'") + "')")
    visits = [
        "/",
        f"/entities/student/{quote(XSS_IMG, safe='')}",
        f"/entities/tutor/{quote(XSS_IMG, safe='')}",
        f"/entities/subject_region/{quote(XSS_SCRIPT + '|' + XSS_IMG, safe='')}",
        f"/search?q={quote(XSS_SCRIPT, safe='')}",
        "/admin/ingest/event/",
        "/admin/alerts/alert/",
        "/admin/metrics/studentsnapshot/",
        "/admin/metrics/session/",
        "/admin/metrics/subjectregionsnapshot/",
    ]
    for path in visits:
        resp = page.goto(f"{server.url}{path}")
        assert resp.status in (200, 404), (path, resp.status)
        page.wait_for_load_state("load")
        assert page.evaluate("typeof window.__xss") == "undefined", path
    # The strings are shown as text.
    page.goto(f"{server.url}/entities/student/{quote(XSS_IMG, safe='')}")
    assert XSS_IMG in page.text_content("h1")
    page.goto(f"{server.url}/")
    page.wait_for_selector('[data-ws-state="open"]')
    page.click("#alert-feed li[data-alert-id] a.msg")
    page.wait_for_selector("#panel:not([hidden]) #panel-title")
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert dialogs == []


def test_reconnects_after_the_server_restarts_and_catches_up(server, page):
    login(page, server)
    page.evaluate("window.__noReload = true")
    marker = f"stu_gone_{uuid.uuid4().hex[:6]}"

    def while_down():
        page.wait_for_selector('[data-ws-state="closed"]', timeout=10_000)
        # A change the page cannot hear about: made while no server (and no socket) is up.
        livesrv.manage(
            server,
            "shell",
            "-c",
            "from django.utils import timezone; from alerts.models import Alert; now = timezone.now(); "
            f"Alert.objects.create(fingerprint='t:{marker}', type='low_health_score', severity='critical', "
            f"entity_type='student', entity_id='{marker}', message='made while down', first_seen=now, last_seen=now)",
        )

    livesrv.restart(server, between=while_down)
    page.wait_for_selector('[data-ws-state="open"]', timeout=20_000)
    page.wait_for_selector(f'#alert-feed li[data-alert-id]:has(.id:text-is("{marker}"))', timeout=5_000)
    assert page.evaluate("window.__noReload") is True


def test_server_stops_cleanly_on_sigterm(tmp_path):
    """…after processing what it took; its log carries the project's lines (an alert raised and its
    insight scored, inline) without Celery's per-task "succeeded" lines of the embedded tasks."""
    srv = livesrv.start(tmp_path)
    log = tmp_path / "server.log"
    resp = httpx.post(
        f"{srv.url}/api/ingest",
        json={"events": [
            history("s"),
            {"event_type": "ib_call_logged", "student_id": "s"},
            {"event_type": "customer_health_update", "student_id": "s", "health_score": 20},
        ]},
        headers={"Authorization": f"Bearer {srv.api_key}"},
    )  # fmt: skip
    assert resp.status_code == 202
    deadline = time.monotonic() + 20
    while "insight scored" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.2)
    livesrv.stop(srv)
    assert srv.proc.returncode == 0
    text = log.read_text()
    assert "stopped" in text and "alert raised" in text
    assert "succeeded in" not in text


def test_the_model_quality_page_renders_its_reliability_chart(server, page):
    login(page, server)
    page.click('nav.mainnav a[href="/quality"]')
    page.wait_for_url("**/quality")
    page.wait_for_function(
        """() => {
            const chart = Chart.getChart(document.querySelector('canvas[data-chart="chart-reliability"]'));
            return chart && chart.data.labels.length === 10 && chart.data.datasets.length === 2;
        }"""
    )
    assert page.locator("#quality-types h2").text_content() == "By alert type"
    page.click('nav.ranges a:text-is("30d")')
    page.wait_for_selector('[data-quality-range="30d"] canvas[data-chart="chart-reliability"]')
