"""Display time zone: DISPLAY_TIME_ZONE, or the user's own from /profile; every time on a page carries
its zone, and "sessions today" counts from midnight in it (page, socket and API)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import time_machine
from django.utils import timezone

from dashboard.tests.conftest import make_alert

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db

# 20:00 UTC is 05:00 next day in Tokyo (midnight there = 15:00 UTC) and 15:00 in New York (EST).
NOW = datetime(2026, 12, 4, 20, 0, tzinfo=UTC)


def _sessions():
    from metrics.models import Session

    for sid, hour in (("s-early", 14), ("s-late", 16)):
        Session.objects.create(
            session_id=sid,
            student_id=f"stu_{sid}",
            tutor_id="tut_1",
            started_at=NOW.replace(hour=hour),
        )


def _sessions_today(html: str) -> str:
    marker = 'data-kpi="sessions_today">'
    return html[html.index(marker) + len(marker) :].split("<", 1)[0]


def test_sessions_today_counts_from_midnight_in_the_display_zone(staff_client, settings, api_key, client):
    _sessions()
    with time_machine.travel(NOW, tick=False):
        settings.DISPLAY_TIME_ZONE = "UTC"
        assert _sessions_today(staff_client.get("/").content.decode()) == "2"
        settings.DISPLAY_TIME_ZONE = "Asia/Tokyo"
        html = staff_client.get("/").content.decode()
        assert _sessions_today(html) == "1"  # 14:00 UTC was yesterday in Tokyo
        assert "Sessions today <span" in html and ">Asia/Tokyo</span>" in html
        kpis = client.get("/api/kpis", HTTP_X_API_KEY=api_key).json()
        assert kpis["sessions_today"] == 1 and kpis["today_since"] == "2026-12-05T00:00:00+09:00"


def test_a_users_own_zone_wins_and_labels_every_time(staff_client, staff_user, settings):
    settings.DISPLAY_TIME_ZONE = "Asia/Tokyo"
    alert = make_alert(now=NOW)
    resp = staff_client.post("/profile", {"time_zone": "America/New_York"})
    assert resp.status_code == 302
    drawer = staff_client.get(f"/alerts/{alert.pk}", HTTP_HX_REQUEST="true").content.decode()
    assert "2026-12-04 15:00 EST" in drawer  # last seen, 20:00 UTC
    staff_client.post("/profile", {"time_zone": ""})  # back to the site default
    drawer = staff_client.get(f"/alerts/{alert.pk}", HTTP_HX_REQUEST="true").content.decode()
    assert "2026-12-05 05:00 JST" in drawer


def test_profile_refuses_an_unknown_zone(staff_client):
    resp = staff_client.post("/profile", {"time_zone": "Mars/Olympus"})
    assert resp.status_code == 400 and "Unknown time zone" in resp.content.decode()
    assert 'name="time_zone"' in staff_client.get("/profile").content.decode()


@pytest.mark.django_db(transaction=True)
async def test_the_socket_renders_in_the_users_zone(settings):
    from asgiref.sync import sync_to_async
    from channels.testing import WebsocketCommunicator
    from django.contrib.auth import get_user_model
    from django.test import Client

    from dashboard.models import Profile
    from iops.asgi import application

    def cookie() -> str:
        user = get_user_model().objects.create_user("tz", is_staff=True)
        Profile.objects.create(user=user, time_zone="Asia/Tokyo")
        client = Client()
        client.force_login(user)
        return f"sessionid={client.cookies['sessionid'].value}"

    headers = [(b"origin", b"http://127.0.0.1:8000"), (b"host", b"127.0.0.1:8000")]
    headers.append((b"cookie", (await sync_to_async(cookie)()).encode()))
    comm = WebsocketCommunicator(application, "/ws/dashboard/", headers=headers)
    connected, _ = await comm.connect()
    assert connected
    first = await comm.receive_from(timeout=5)
    assert ">Asia/Tokyo</span>" in first
    await comm.disconnect()
    assert timezone.get_current_timezone_name() == "UTC"  # nothing leaked into this thread


def test_display_time_zone_is_validated():
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY_TIME_ZONE"}
    code = "import django; django.setup()"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "iops.settings", "DISPLAY_TIME_ZONE": "CEST+2"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0 and "DISPLAY_TIME_ZONE must be an IANA time zone" in out.stderr
