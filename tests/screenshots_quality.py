"""The model-quality screenshot (docs/screenshots/quality.png): a live server, the simulator's 30 days of
history, operator labels through the API, then headless Chromium on /quality?range=30d.

    .venv/bin/python -m tests.screenshots_quality

What is real and what is staged, so the picture is read right:
- alerts and insights: raised and scored by the server from the simulated events;
- labels: acknowledge / resolve / dismiss calls through `POST /api/alerts/{id}/...`, chosen by a seeded
  random stand-in for operators (a per-type chance of acting, reasons from the fixed list);
- calibration: the simulator's history reaches 30 days back, so no real scoring is 30 days old yet. The
  script inserts one backdated scoring per scored student 31 days ago, risk = the local model's risk for
  the student's current health (a staged, look-ahead score), and the outcome is read from the
  simulated sessions as the page always does. Treat that panel's figures as a demonstration.
"""

from __future__ import annotations

import random
import sys
import tempfile
from pathlib import Path

import httpx

from tests import livesrv
from tests.screenshots import OUT, login, simulate, wait_until_processed

ACT_CHANCE = {
    "low_health_score": 0.7,
    "first_session_failed": 0.8,
    "velocity_drop": 0.45,
    "high_ib_call_frequency": 0.6,
    "tutor_overload": 0.5,
    "supply_demand_imbalance": 0.55,
    "rate_anomaly": 0.35,
}
REASONS = (
    ["false_positive"] * 4 + ["duplicate"] * 2 + ["known_issue"] * 2 + ["not_actionable"] * 2 + ["other"]
)

BACKDATE = """
from datetime import timedelta
from django.utils import timezone
from insights.local_model import STUDENT_MODEL, student_level
from insights.models import Insight
from metrics.health import churn_probability
from metrics.models import StudentSnapshot
at = timezone.now() - timedelta(days=31)
rows = [
    Insight(entity_type="student", entity_id=s.student_id, risk=churn_probability(s.health_score),
            level=student_level(s.health_score), explanation="backdated demonstration scoring (screenshot)",
            model=STUDENT_MODEL, scored_at=at, features={"health": s.health_score})
    for s in StudentSnapshot.objects.exclude(health_score=None)
]
Insight.objects.bulk_create(rows)
print(len(rows))
"""


def label_alerts(server: livesrv.LiveServer, key: str, seed: int = 19) -> int:
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {key}"}
    alerts = httpx.get(f"{server.url}/api/alerts?status=open&limit=500", headers=headers, timeout=10).json()
    done = 0
    for alert in alerts["results"]:
        if rng.random() < 0.2:
            continue  # some stay unlabelled, as on any shift
        base = f"{server.url}/api/alerts/{alert['id']}"
        if rng.random() < ACT_CHANCE.get(alert["type"], 0.5):
            action = rng.choice(["acknowledge", "resolve"])
            resp = httpx.post(f"{base}/{action}", headers=headers, timeout=10)
        else:
            resp = httpx.post(
                f"{base}/dismiss", json={"reason": rng.choice(REASONS)}, headers=headers, timeout=10
            )
        done += resp.status_code == 200
    return done


def main() -> int:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="iops-quality-") as tmp:
        server = livesrv.start(Path(tmp))
        try:
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
            simulate(server, "--duration", "6", "--rate", "60", "--scenario", "tutor_shortage", *common)
            wait_until_processed(server, expected=5000)
            key = livesrv.manage(server, "create_api_key", "operators", "--scopes", "read,act").strip()
            print("labelled", label_alerts(server, key))
            print("backdated scorings", livesrv.manage(server, "shell", "-c", BACKDATE).strip())
            OUT.mkdir(parents=True, exist_ok=True)
            with sync_playwright() as p:
                browser = p.chromium.launch(
                    executable_path=livesrv.CHROMIUM, args=livesrv.CHROMIUM_ARGS, headless=True
                )
                page = browser.new_context(viewport={"width": 1440, "height": 1000}).new_page()
                login(page, server)
                page.goto(f"{server.url}/quality?range=30d")
                page.wait_for_function(
                    "() => Chart.getChart(document.querySelector('canvas[data-chart=chart-reliability]'))"
                )
                page.wait_for_timeout(400)
                path = OUT / "quality.png"
                page.screenshot(path=str(path), full_page=True)
                print(path.relative_to(livesrv.ROOT))
                browser.close()
        finally:
            livesrv.stop(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
