"""Silences in headless Chromium against the real one-process server (issue 19): Snooze 4 h on a feed row
mutes it in this browser and in another one, and the silence is listed by the API.

With IOPS_SCREENSHOTS=1 the test also writes docs/screenshots/silences.png (the feed with the muted alert)
and docs/screenshots/silences-admin.png (the silences admin)."""

from __future__ import annotations

import os

import httpx
import pytest

from tests import livesrv
from tests.test_browser import browser, history, ingest, login, new_page, server  # noqa: F401 - fixtures

pytestmark = pytest.mark.browser


def test_snooze_from_the_feed_mutes_the_row_everywhere(server, new_page):  # noqa: F811
    first, second = new_page(), new_page()
    login(first, server)
    login(second, server)
    ingest(
        server,
        history("stu_snooze"),
        {"event_type": "customer_health_update", "student_id": "stu_snooze", "health_score": 38},
        history("stu_loud"),
        {"event_type": "customer_health_update", "student_id": "stu_loud", "health_score": 36},
    )
    row = '#alert-feed li[data-alert-id]:has(.id:text-is("stu_snooze"))'
    first.wait_for_selector(row)
    second.wait_for_selector(row)
    alert_id = first.get_attribute(row, "data-alert-id")
    second.evaluate("window.__noReload = true")

    first.click(f'{row} button[data-action="snooze"]')

    first.wait_for_selector(f'#alert-{alert_id}[data-muted="true"] .muted-badge', timeout=5_000)
    second.wait_for_selector(f'#alert-{alert_id}[data-muted="true"]', timeout=5_000)
    assert second.evaluate("window.__noReload") is True
    loud = '#alert-feed li[data-alert-id]:has(.id:text-is("stu_loud"))'
    assert first.get_attribute(loud, "data-muted") is None

    silences = httpx.get(
        f"{server.url}/api/silences?state=active", headers={"Authorization": f"Bearer {server.api_key}"}
    ).json()["results"]
    assert [(s["entity_type"], s["entity_id"], s["alert_type"]) for s in silences] == [
        ("student", "stu_snooze", "low_health_score")
    ]

    # The muted filter hides it.
    first.check("input[name=muted]")
    first.wait_for_url("**muted=hide")
    first.wait_for_selector(loud)
    assert first.locator(f"#alert-{alert_id}").count() == 0

    if os.environ.get("IOPS_SCREENSHOTS") == "1":
        out = livesrv.ROOT / "docs" / "screenshots"
        second.set_viewport_size({"width": 1400, "height": 900})
        second.locator("section.feed").screenshot(path=str(out / "silences.png"))
        second.set_viewport_size({"width": 1800, "height": 700})
        second.goto(f"{server.url}/admin/alerts/silence/")
        second.screenshot(path=str(out / "silences-admin.png"))
