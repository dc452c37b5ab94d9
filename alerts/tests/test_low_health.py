"""Low health rule end to end: one alert per student, escalation, lifecycle over the API."""

from __future__ import annotations

import pytest

from alerts.models import Alert
from conftest import event

pytestmark = pytest.mark.django_db


def health(post, drain, score, student="stu_1"):
    post(event("customer_health_update", student_id=student, health_score=score))
    drain()


@pytest.mark.parametrize(
    ("score", "severity"), [(70, None), (69.9, "warning"), (50, "warning"), (49.9, "critical")]
)
def test_thresholds(post, drain, score, severity):
    health(post, drain, score)
    alert = Alert.objects.filter(type="low_health_score").first()
    assert (alert.severity if alert else None) == severity


def test_repeats_raise_occurrences_and_escalate(post, drain):
    health(post, drain, 65)
    health(post, drain, 60)
    health(post, drain, 40)
    alert = Alert.objects.get(type="low_health_score")
    assert alert.occurrences == 3 and alert.severity == "critical" and alert.status == "open"
    assert alert.transitions.filter(note__startswith="escalated").count() == 1


def test_lifecycle_over_the_api(client, staff_user, post, drain, api_key):
    health(post, drain, 40)
    alert = Alert.objects.get()
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
    health(post, drain, 45)
    assert Alert.objects.filter(status="open").count() == 1


def test_alert_list_filters_and_auth(client, staff_user, outsider, post, drain, api_key):
    health(post, drain, 40, student="stu_a")
    health(post, drain, 65, student="stu_b")
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
    tutor = client.get("/api/entities/tutor/tut_1", **auth).json()
    assert tutor["avg_rating"] == 4.0 and tutor["rated_sessions"] == 1
    assert client.get("/api/entities/student/nobody", **auth).status_code == 404
    listing = client.get("/api/entities/student?order=-sessions_7d&limit=1", **auth).json()
    assert listing["results"][0]["entity_id"] == "stu_1" and listing["next"] is None
    kpis = client.get("/api/kpis?range=1h", **auth).json()
    assert kpis["sessions_completed"] == 1 and "events_per_min" in kpis
