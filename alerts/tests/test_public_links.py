"""Links in notification messages use PUBLIC_BASE_URL (where people reach IOps), not the bind address."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.utils import timezone

from alerts.messages import alert_message, group_message, message_text

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db


def test_alert_message_links_to_the_public_base_url(make_alert, settings):
    settings.PUBLIC_BASE_URL = "https://ops.example.com/iops"
    alert = make_alert(
        type="supply_demand_imbalance", entity_type="subject_region", entity_id="Computer Science|west"
    )
    text = message_text(alert_message(alert=alert, now=timezone.now()))
    assert "https://ops.example.com/iops/entities/subject_region/Computer%20Science%7Cwest" in text
    assert "127.0.0.1" not in text


def test_group_message_links_each_alert_and_the_feed_to_the_public_base_url(make_alert, settings):
    settings.PUBLIC_BASE_URL = "https://ops.example.com"
    alerts = [make_alert(entity_id=f"stu_{i}") for i in range(3)]
    message = group_message(alerts=alerts, now=timezone.now())
    assert message["url"] == "https://ops.example.com/?severity=critical&status=active"
    assert [a["url"] for a in message["alerts"]] == [
        f"https://ops.example.com/entities/student/stu_{i}" for i in range(3)
    ]
    assert "https://ops.example.com/entities/student/stu_2" in message_text(message)


def _setting(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("PUBLIC_BASE_URL", "DASHBOARD_BASE_URL")}
    code = "import django; django.setup(); from django.conf import settings; print(settings.PUBLIC_BASE_URL)"
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "iops.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_public_base_url_from_the_environment_and_its_older_name():
    assert _setting(PUBLIC_BASE_URL="https://ops.example.com/").stdout.strip() == "https://ops.example.com"
    assert _setting(DASHBOARD_BASE_URL="https://old.example.com").stdout.strip() == "https://old.example.com"


def test_a_public_base_url_that_is_not_an_absolute_url_stops_start_up():
    result = _setting(PUBLIC_BASE_URL="iops.example.com")
    assert result.returncode != 0 and "PUBLIC_BASE_URL must be an absolute http(s) URL" in result.stderr
