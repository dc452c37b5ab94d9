"""Screenshots for the README: a live server, a short simulation, then headless Chromium.

    .venv/bin/python -m tests.screenshots            # writes docs/screenshots/*.png

Starts `manage.py serve` on a free port with its own SQLite file, backfills 30 days of history
through the ingest API (`simulate --speed`), adds a few minutes of real-time traffic, then captures
the dashboard (light and dark), the alert drawer and an entity page.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests import livesrv

OUT = livesrv.ROOT / "docs" / "screenshots"


def simulate(server: livesrv.LiveServer, *args: str) -> None:
    livesrv.manage(server, "simulate", "--target", server.url, "--api-key", server.api_key, *args)


def wait_until_processed(server: livesrv.LiveServer, expected: int, timeout: float = 120) -> None:
    """Poll the read API until the processed-event count stops growing."""
    headers = {"Authorization": f"Bearer {server.api_key}"}
    deadline = time.monotonic() + timeout
    last, stable = -1, 0
    while time.monotonic() < deadline:
        seen = httpx.get(f"{server.url}/api/kpis?range=30d", headers=headers, timeout=5).json()[
            "events_in_range"
        ]
        stable = stable + 1 if seen == last else 0
        if seen >= expected or stable >= 4:
            return
        last = seen
        time.sleep(0.5)


def login(page, server: livesrv.LiveServer) -> None:
    page.goto(f"{server.url}/accounts/login/")
    page.fill("input[name=username]", server.username)
    page.fill("input[name=password]", server.password)
    page.click("button[type=submit]")
    page.wait_for_selector('[data-ws-state="open"]')


def capture(server: livesrv.LiveServer) -> list[Path]:
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    shots = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=livesrv.CHROMIUM, args=livesrv.CHROMIUM_ARGS, headless=True
        )
        for scheme in ("light", "dark"):
            context = browser.new_context(viewport={"width": 1440, "height": 1000}, color_scheme=scheme)
            page = context.new_page()
            login(page, server)
            page.wait_for_function(
                "() => Chart.getChart(document.querySelector('canvas[data-chart=chart-events]'))"
            )
            page.wait_for_timeout(600)  # one coalesced update, charts settled
            path = OUT / f"dashboard-{scheme}.png"
            page.screenshot(path=str(path), full_page=True)
            shots.append(path)
            if scheme == "light":
                # An alert with its churn insight (risk badge), else any critical one, else the first.
                page.locator(
                    "#alert-feed li[data-alert-id]:has(.risk) a.msg, "
                    "#alert-feed li[data-severity=critical] a.msg, #alert-feed li[data-alert-id] a.msg"
                ).first.click()
                page.wait_for_selector("#panel:not([hidden]) #panel-title")
                page.wait_for_timeout(300)
                path = OUT / "alert-drawer.png"
                page.screenshot(path=str(path))
                shots.append(path)
                page.keyboard.press("Escape")
                href = page.get_attribute("#alert-feed .meta a[href*='/entities/student/']", "href")
                page.goto(f"{server.url}{href}")
                page.wait_for_function(
                    "() => Chart.getChart(document.querySelector('canvas[data-chart=entity-history]'))"
                )
                page.wait_for_timeout(300)
                path = OUT / "entity-student.png"
                page.screenshot(path=str(path), full_page=True)
                shots.append(path)
                tablet = browser.new_context(viewport={"width": 820, "height": 1180}, color_scheme="light")
                tpage = tablet.new_page()
                login(tpage, server)
                tpage.wait_for_timeout(600)
                path = OUT / "dashboard-tablet.png"
                tpage.screenshot(path=str(path))
                shots.append(path)
                tablet.close()
            context.close()
        browser.close()
    return shots


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="iops-shots-") as tmp:
        server = livesrv.start(Path(tmp))
        try:
            # 30 days of history in 12 s, then a couple of minutes' worth of live traffic.
            common = ("--streams", "20", "--seed", "7")
            simulate(
                server,
                "--duration",
                "12",
                "--rate",
                "400",
                "--speed",
                "216000",
                "--scenario",
                "churn_wave",
                *common,
            )
            simulate(server, "--duration", "6", "--rate", "60", "--scenario", "ib_spike", *common)
            simulate(server, "--duration", "6", "--rate", "60", "--scenario", "tutor_shortage", *common)
            wait_until_processed(server, expected=6000)
            for path in capture(server):
                print(path.relative_to(livesrv.ROOT))
        finally:
            livesrv.stop(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
