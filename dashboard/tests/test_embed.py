"""Embeddable panels: /embed/<panel>/ opened by a signed, expiring link or a read key, framed only by
FRAME_ANCESTORS (every other page: frame-ancestors 'none'), live over /ws/embed/<panel>/ with the link's
token; the link is minted by GET /api/embed-link and `manage.py embed_link`."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from io import StringIO
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import time_machine
from channels.testing import WebsocketCommunicator
from django.core.management import call_command
from django.utils import timezone

from dashboard.embed import embed_token
from ingest.keys import api_key_create

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db


def _token(panel: str = "kpis", ttl: int = 600, range_key: str = "24h") -> str:
    return embed_token(panel=panel, range_key=range_key, ttl_seconds=ttl, now=timezone.now())


def test_a_signed_link_opens_the_kpi_strip_framed_by_frame_ancestors(client, settings):
    settings.FRAME_ANCESTORS = "https://admin.example.com"
    resp = client.get(f"/embed/kpis/?t={_token()}")
    assert resp.status_code == 200
    assert resp["Content-Security-Policy"] == "frame-ancestors https://admin.example.com"
    assert "X-Frame-Options" not in resp and resp["Cache-Control"] == "no-store"
    html = resp.content.decode()
    assert 'data-kpi="sessions_today"' in html and 'ws-connect="/ws/embed/kpis/?t=' in html
    assert "Log out" not in html and 'action="/search"' not in html  # the panel alone, read-only


def test_a_chart_panel_renders_its_canvas_and_data(client):
    html = client.get(f"/embed/sessions/?t={_token('sessions', range_key='7d')}").content.decode()
    assert 'data-chart="chart-sessions"' in html and 'id="chart-sessions"' in html
    assert "data-kpi" not in html and "<small>7d</small>" in html


def test_every_other_page_refuses_to_be_framed(client, staff_user, settings):
    settings.FRAME_ANCESTORS = "https://admin.example.com"
    client.force_login(staff_user)
    for path in ("/", "/accounts/login/", "/api/kpis", "/admin/", "/healthz", "/nope"):
        resp = client.get(path)
        assert resp["Content-Security-Policy"] == "frame-ancestors 'none'", path


@pytest.mark.parametrize(
    "query",
    ["", "?t=nonsense", "?t={other}", "?t={tampered}"],
)
def test_a_missing_forged_or_foreign_token_is_refused(client, query):
    other = _token("health")
    tampered = _token()[:-2] + "xx"
    resp = client.get("/embed/kpis/" + query.format(other=other, tampered=tampered))
    assert resp.status_code == 403 and resp["Content-Security-Policy"].startswith("frame-ancestors")


def test_a_link_expires(client):
    token = _token(ttl=60)
    assert client.get(f"/embed/kpis/?t={token}").status_code == 200
    with time_machine.travel(timezone.now() + timedelta(seconds=61)):
        resp = client.get(f"/embed/kpis/?t={token}")
    assert resp.status_code == 403 and b"expired" in resp.content


def test_a_read_key_in_the_headers_opens_a_panel_an_ingest_key_does_not(client):
    reader = api_key_create(name="platform", scopes=["read"]).plaintext
    ingester = api_key_create(name="sender", scopes=["ingest"]).plaintext
    resp = client.get("/embed/events/", HTTP_X_API_KEY=reader)
    assert resp.status_code == 200 and "/ws/embed/events/?t=" in resp.content.decode()
    assert client.get("/embed/events/", HTTP_X_API_KEY=ingester).status_code == 403
    assert client.get("/embed/nothing/", HTTP_X_API_KEY=reader).status_code == 404


def test_api_mints_a_working_link_with_a_read_key(client, settings):
    settings.PUBLIC_BASE_URL = "https://iops.example.com"
    reader = api_key_create(name="platform", scopes=["read"]).plaintext
    resp = client.get("/api/embed-link?panel=kpis&range=1h&ttl=300", HTTP_X_API_KEY=reader)
    assert resp.status_code == 200, resp.content
    link = resp.json()
    assert link["url"].startswith("https://iops.example.com/embed/kpis/?t=") and link["range"] == "1h"
    parts = urlsplit(link["url"])
    assert client.get(f"{parts.path}?{parts.query}").status_code == 200
    resp = client.get(
        f"/api/embed-link?panel=kpis&ttl={settings.EMBED_LINK_MAX_AGE_SECONDS + 1}", HTTP_X_API_KEY=reader
    )
    assert resp.status_code == 400 and resp.json()["errors"][0]["field"] == "ttl"
    resp = client.get("/api/embed-link?panel=secrets", HTTP_X_API_KEY=reader)
    assert resp.status_code == 400 and resp.json()["errors"][0]["field"] == "panel"
    assert client.get("/api/embed-link?panel=kpis").status_code == 401


def test_management_command_prints_a_link(client):
    out, err = StringIO(), StringIO()
    call_command("embed_link", "health", "--ttl", "120", stdout=out, stderr=err)
    url = out.getvalue().strip()
    assert "/embed/health/?t=" in url and "valid until" in err.getvalue()
    assert client.get(f"/embed/health/?t={parse_qs(urlsplit(url).query)['t'][0]}").status_code == 200


def _settings_value(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k != "FRAME_ANCESTORS"}
    code = "import django; django.setup(); from django.conf import settings; print(settings.FRAME_ANCESTORS)"
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "iops.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_frame_ancestors_setting_is_validated():
    assert _settings_value().stdout.strip() == "'none'"
    ok = _settings_value(FRAME_ANCESTORS="'self', https://admin.example.com https://*.example.org:8443")
    assert ok.stdout.strip() == "'self' https://admin.example.com https://*.example.org:8443"
    for bad in ("https://a.example.com; script-src *", "'none' https://a.example.com", "javascript:x"):
        out = _settings_value(FRAME_ANCESTORS=bad)
        assert out.returncode != 0 and "FRAME_ANCESTORS must be" in out.stderr, bad


# --- the live socket --------------------------------------------------------------------------


def _headers(origin: str = "http://127.0.0.1:8000"):
    return [(b"origin", origin.encode()), (b"host", b"127.0.0.1:8000")]


@pytest.mark.django_db(transaction=True)
async def test_socket_accepts_the_link_sends_the_panel_then_updates(settings):
    from asgiref.sync import sync_to_async

    from iops.asgi import application
    from iops.lib.realtime import Change, publish_change

    settings.DASHBOARD_PUSH_INTERVAL_MS = 50
    token = await sync_to_async(_token)()
    comm = WebsocketCommunicator(application, f"/ws/embed/kpis/?t={token}", headers=_headers())
    connected, _ = await comm.connect()
    assert connected
    first = await comm.receive_from(timeout=5)
    assert 'id="kpis"' in first and 'hx-swap-oob="true"' in first and "alert-feed" not in first
    await sync_to_async(publish_change)(Change(alerts_updated=[1]))
    update = await comm.receive_from(timeout=5)
    assert 'data-kpi="open_alerts"' in update
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("case", ["none", "forged", "other_panel", "cross_origin"])
async def test_socket_refuses_without_a_valid_link_or_from_another_origin(case):
    from asgiref.sync import sync_to_async

    from iops.asgi import application

    token = await sync_to_async(_token)()
    path, origin = f"/ws/embed/kpis/?t={token}", "http://127.0.0.1:8000"
    if case == "none":
        path = "/ws/embed/kpis/"
    elif case == "forged":
        path = path[:-3] + "abc"
    elif case == "other_panel":
        path = f"/ws/embed/health/?t={token}"
    else:
        origin = "https://admin.example.com"
    comm = WebsocketCommunicator(application, path, headers=_headers(origin))
    connected, _ = await comm.connect()
    assert not connected
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_socket_closes_when_the_link_expires():
    from asgiref.sync import sync_to_async

    from iops.asgi import application

    token = await sync_to_async(embed_token)(
        panel="events", range_key="1h", ttl_seconds=2, now=timezone.now()
    )
    comm = WebsocketCommunicator(application, f"/ws/embed/events/?t={token}", headers=_headers())
    connected, _ = await comm.connect()
    assert connected
    assert 'id="chart-events"' in await comm.receive_from(timeout=5)
    closed = await comm.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 4403}
    await comm.disconnect()
