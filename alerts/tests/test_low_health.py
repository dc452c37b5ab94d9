"""The low-health rule on our health score end to end: who is judged, thresholds, one alert per student,
escalation, lifecycle over the API."""

from __future__ import annotations

import pytest

from alerts.models import Alert
from conftest import READING_CRITICAL, READING_WARNING, READING_WARNING_LOWER, event, platform_reading
from metrics.models import StudentSnapshot

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("reading", "health", "severity"),
    [
        (85, 100.0, None),
        (62, 72.8, None),
        (READING_WARNING, 59.0, "warning"),
        (READING_CRITICAL, 40.0, "critical"),
    ],
)
def test_a_watched_students_platform_drop_sets_our_score_and_its_alert(
    post, drain, reading, health, severity
):
    platform_reading(post, drain, reading)
    snap = StudentSnapshot.objects.get(student_id="stu_1")
    assert snap.health_score == health and snap.platform_health_baseline == 85
    alert = Alert.objects.filter(type="low_health_score").first()
    assert (alert.severity if alert else None) == severity
    if alert:
        assert alert.details["health_score"] == health and alert.details["platform_health_score"] == reading
        assert "platform reads" in alert.message


def test_a_new_student_is_not_enough_data_whatever_the_platform_says(post, drain):
    platform_reading(post, drain, 30, watch=False)
    snap = StudentSnapshot.objects.get(student_id="stu_1")
    assert snap.health_score is None and snap.platform_health_score == 30
    assert not Alert.objects.filter(type="low_health_score").exists()


def test_a_student_the_platform_always_reads_low_is_not_at_risk_for_it(post, drain):
    """Judged against their own history: a steady 58 is this student's normal, not a collapse."""
    from conftest import watched_student

    watched_student(post, drain, baseline=58)
    platform_reading(post, drain, 57)
    assert StudentSnapshot.objects.get(student_id="stu_1").health_score >= 70
    assert not Alert.objects.filter(type="low_health_score").exists()


def test_repeats_raise_occurrences_and_escalate(post, drain, settings):
    settings.ALERT_REPEAT_TICK_SECONDS = 0  # every repeat counts (the tick: test_lifecycle.py)
    platform_reading(post, drain, READING_WARNING)
    platform_reading(post, drain, READING_WARNING_LOWER)
    platform_reading(post, drain, READING_CRITICAL)
    alert = Alert.objects.get(type="low_health_score")
    assert alert.occurrences == 3 and alert.severity == "critical" and alert.status == "open"
    assert alert.transitions.filter(note__startswith="escalated").count() == 1


def test_lifecycle_over_the_api(client, staff_user, post, drain, api_key):
    platform_reading(post, drain, READING_CRITICAL)
    alert = Alert.objects.get(type="low_health_score")
    client.force_login(staff_user)
    resp = client.post(f"/api/alerts/{alert.pk}/acknowledge")
    assert resp.status_code == 200 and resp.json()["status"] == "acknowledged"
    assert resp.json()["acknowledged_by"] == "ops"
    resp = client.post(f"/api/alerts/{alert.pk}/acknowledge")
    assert resp.status_code == 409 and resp.json()["error"]
    resp = client.post(
        f"/api/alerts/{alert.pk}/dismiss", data={"reason": ""}, content_type="application/json"
    )
    assert resp.status_code == 400
    resp = client.post(f"/api/alerts/{alert.pk}/resolve")
    assert resp.status_code == 200 and resp.json()["status"] == "resolved"
    assert list(alert.transitions.values_list("to_status", flat=True)) == ["open", "acknowledged", "resolved"]
    # a new low reading after resolution opens a new alert
    platform_reading(post, drain, READING_CRITICAL - 2)
    assert Alert.objects.filter(type="low_health_score", status="open").count() == 1


def test_alert_list_filters_and_auth(client, staff_user, outsider, post, drain, api_key):
    platform_reading(post, drain, READING_CRITICAL, student="stu_a")
    platform_reading(post, drain, READING_WARNING, student="stu_b")
    assert client.get("/api/alerts").status_code == 401
    client.force_login(outsider)
    assert client.get("/api/alerts").status_code == 401
    resp = client.get("/api/alerts?severity=critical", HTTP_AUTHORIZATION=f"Bearer {api_key}")
    assert resp.status_code == 200
    assert [a["entity_id"] for a in resp.json()["results"]] == ["stu_a"]
    resp = client.get("/api/alerts?severity=purple", HTTP_AUTHORIZATION=f"Bearer {api_key}")
    assert resp.status_code == 400 and resp.json()["errors"][0]["field"] == "severity"


def test_entity_api(client, post, drain, api_key):
    post(event("session_completed", session_id="s1", student_id="stu_1", tutor_id="tut_1", student_rating=4))
    drain()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {api_key}"}
    student = client.get("/api/entities/student/stu_1", **auth).json()
    assert student["entity_type"] == "student" and student["sessions_7d"] == 1 and "health_score" in student
    assert student["health_score"] is None  # one session a moment ago: not enough data yet
    tutor = client.get("/api/entities/tutor/tut_1", **auth).json()
    assert tutor["avg_rating"] == 4.0 and tutor["rated_sessions"] == 1
    assert client.get("/api/entities/student/nobody", **auth).status_code == 404
    listing = client.get("/api/entities/student?order=-sessions_7d&limit=1", **auth).json()
    assert listing["results"][0]["entity_id"] == "stu_1" and listing["next"] is None
    kpis = client.get("/api/kpis?range=1h", **auth).json()
    assert kpis["sessions_completed"] == 1 and "events_per_min" in kpis
    assert kpis["students_at_risk"] == 0 and kpis["students_not_scored"] == 1
