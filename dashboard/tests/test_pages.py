from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_dashboard_requires_staff_login(client, outsider):
    resp = client.get("/")
    assert resp.status_code == 302 and resp["Location"].startswith("/accounts/login/")
    client.force_login(outsider)
    assert client.get("/").status_code == 302


def test_dashboard_renders_every_contract_kpi(client, staff_user):
    client.force_login(staff_user)
    resp = client.get("/?range=7d")
    assert resp.status_code == 200
    html = resp.content.decode()
    for name in (
        "events_per_min",
        "sessions_today",
        "active_students",
        "ib_calls_24h",
        "avg_health",
        "open_alerts",
    ):
        assert f'data-kpi="{name}"' in html
    assert 'data-ws-state="connecting"' in html and 'ws-connect="/ws/dashboard/?range=7d"' in html


def test_healthz_is_open_and_reports_checks(client):
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.json() == {
        "status": "ok",
        "checks": {"database": "ok", "stream": "ok", "channel_layer": "ok"},
    }


def test_healthz_names_the_failing_stream(client, settings):
    settings.IOPS_STREAM = "redis"
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    resp = client.get("/healthz")
    assert resp.status_code == 503 and resp.json()["checks"]["stream"].startswith("error")


def test_admin_lists_events_and_snapshots(admin_client, post, drain):
    from conftest import event

    post(event("session_completed", session_id="s1", student_id="stu_adm", tutor_id="tut_adm"))
    post(event("customer_health_update", student_id="stu_adm", health_score=42))
    drain()
    for url, needle in (
        ("/admin/ingest/event/", "stu_adm"),
        ("/admin/metrics/studentsnapshot/", "stu_adm"),
        ("/admin/metrics/tutorsnapshot/", "tut_adm"),
        ("/admin/alerts/alert/", "stu_adm"),
    ):
        resp = admin_client.get(url)
        assert resp.status_code == 200 and needle in resp.content.decode(), url
