"""CSV exports under /api/export/: the list's filters apply, the header row is right, the body streams
page by page (a large export is never built in memory), authenticated like the API."""

from __future__ import annotations

import csv
import io

import pytest
from django.db import connection
from django.http import StreamingHttpResponse
from django.test.utils import CaptureQueriesContext

from dashboard import export
from dashboard.tests.conftest import make_alert, make_student

pytestmark = pytest.mark.django_db


def _rows(resp) -> list[list[str]]:
    assert resp.status_code == 200, resp.content[:300]
    assert isinstance(resp, StreamingHttpResponse) and resp["Content-Type"].startswith("text/csv")
    assert resp["Content-Disposition"].startswith('attachment; filename="iops-')
    return list(csv.reader(io.StringIO(b"".join(resp.streaming_content).decode())))


def test_alert_export_applies_the_filters_and_starts_with_the_header(staff_client):
    make_alert(entity_id="stu_1", severity="critical", status="open")
    make_alert(entity_id="stu_2", severity="critical", status="acknowledged")
    make_alert(entity_id="stu_3", severity="critical", status="resolved")
    make_alert(entity_id="stu_4", severity="warning", status="open")
    rows = _rows(staff_client.get("/api/export/alerts.csv?severity=critical&status=active"))
    assert rows[0] == list(export.ALERT_COLUMNS)
    assert [r[5] for r in rows[1:]] == ["stu_2", "stu_1"]  # newest first
    assert {r[2] for r in rows[1:]} == {"critical"}
    rows = _rows(staff_client.get("/api/export/alerts.csv?q=STU_4"))
    assert [r[5] for r in rows[1:]] == ["stu_4"]


def test_dashboard_export_link_carries_the_feed_filters(staff_client):
    make_alert(entity_id="stu_1", severity="critical")
    html = staff_client.get("/?severity=critical&status=active").content.decode()
    assert 'href="/api/export/alerts.csv?severity=critical&amp;status=active"' in html
    assert 'href="/api/export/students.csv"' in html and 'href="/api/export/tutors.csv"' in html


def test_student_export_filters_and_neutralises_formulas(client, api_key):
    make_student("stu_12", health_score=40.0)
    make_student("stu_120", health_score=90.0)
    make_student("=HYPERLINK(1)", health_score=10.0)
    make_student("stu_3", health_score=30.0)
    resp = client.get("/api/export/students.csv?health_below=50", HTTP_X_API_KEY=api_key)
    rows = _rows(resp)
    assert rows[0][0] == "student_id" and "health_score" in rows[0] and "sessions_7d" in rows[0]
    assert [r[0] for r in rows[1:]] == ["'=HYPERLINK(1)", "stu_12", "stu_3"]
    rows = _rows(client.get("/api/export/students.csv?q=stu_12", HTTP_X_API_KEY=api_key))
    assert [r[0] for r in rows[1:]] == ["stu_12", "stu_120"]
    health = rows[0].index("health_score")
    assert rows[1][health] == "40.0"


def test_tutor_export_has_its_derived_columns(client, api_key):
    from django.utils import timezone

    from metrics.models import TutorSnapshot

    now = timezone.now()
    TutorSnapshot.objects.create(tutor_id="tut_1", as_of=now, updated_at=now, burnout_risk=0.7)
    TutorSnapshot.objects.create(tutor_id="tut_2", as_of=now, updated_at=now, burnout_risk=0.1)
    rows = _rows(client.get("/api/export/tutors.csv?burnout_above=0.5", HTTP_X_API_KEY=api_key))
    assert rows[0][0] == "tutor_id" and rows[0][-2:] == ["avg_rating", "burnout_level"]
    assert [(r[0], r[-1]) for r in rows[1:]] == [("tut_1", "high")]


def test_history_export_has_one_row_per_day(staff_client):
    make_student("stu_9")
    rows = _rows(staff_client.get("/api/export/history.csv?entity_type=student&entity_id=stu_9&days=7"))
    assert rows[0][:3] == ["date", "sessions_started", "sessions_completed"]
    assert len(rows) == 8
    resp = staff_client.get("/api/export/history.csv?entity_type=student&entity_id=nobody")
    assert resp.status_code == 404 and resp.json()["errors"][0]["field"] == "id"
    page = staff_client.get("/entities/student/stu_9").content.decode()
    assert 'href="/api/export/history.csv?entity_type=student&amp;entity_id=stu_9&amp;days=30"' in page


def test_a_large_export_streams_page_by_page(client, api_key, monkeypatch):
    from alerts.models import Alert

    monkeypatch.setattr(export, "EXPORT_PAGE_ROWS", 100)
    Alert.objects.bulk_create(
        [
            Alert(
                fingerprint=f"x:{i}",
                type="low_health_score",
                severity="warning",
                status="resolved",
                entity_type="student",
                entity_id=f"stu_{i}",
                message="m",
                first_seen="2026-01-01T00:00:00Z",
                last_seen="2026-01-01T00:00:00Z",
            )
            for i in range(250)
        ]
    )
    resp = client.get("/api/export/alerts.csv", HTTP_X_API_KEY=api_key)
    assert isinstance(resp, StreamingHttpResponse)
    body = iter(resp.streaming_content)
    with CaptureQueriesContext(connection) as queries:
        next(body)  # the header: nothing read yet
        assert len(queries) == 0
        next(body)  # the first page: one query, LIMIT 100
        assert len(queries) == 1 and "LIMIT 100" in queries[0]["sql"]
    rest = b"".join(body).decode().splitlines()
    assert len(rest) == 150


@pytest.mark.django_db(transaction=True)  # the request runs on another thread: committed rows
async def test_under_asgi_the_body_is_an_async_stream(async_client, api_key):
    resp = await async_client.get("/api/export/alerts.csv", headers={"X-API-Key": api_key})
    assert isinstance(resp, StreamingHttpResponse) and resp.is_async
    chunks = [chunk async for chunk in resp.streaming_content]
    assert chunks[0].decode().startswith("id,type,severity")


def test_exports_need_a_credential(client, outsider):
    resp = client.get("/api/export/alerts.csv")
    assert resp.status_code == 401 and resp.json()["errors"][0]["field"] == "Authorization"
    client.force_login(outsider)
    assert client.get("/api/export/students.csv").status_code == 401


def test_bad_filter_is_a_400_naming_the_field(client, api_key):
    resp = client.get("/api/export/alerts.csv?status=nope", HTTP_X_API_KEY=api_key)
    assert resp.status_code == 400 and resp.json()["errors"][0]["field"] == "status"
