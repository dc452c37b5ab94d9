"""An alert action through the API records which key acted: on the alert, its history (API, admin) and
the dashboard's drawer."""

from __future__ import annotations

import pytest

from ingest.keys import api_key_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def actor_key():
    return api_key_create(name="pagerbot", scopes=["read", "act"])


def test_acknowledge_with_a_key_records_the_key(client, make_alert, actor_key):
    alert = make_alert()
    resp = client.post(f"/api/alerts/{alert.pk}/acknowledge", HTTP_X_API_KEY=actor_key.plaintext)
    assert resp.status_code == 200
    label = f"pagerbot ({actor_key.api_key.prefix}…)"
    assert resp.json()["acknowledged_by_key"] == label and resp.json()["acknowledged_by"] is None
    history = client.get(f"/api/alerts/{alert.pk}", HTTP_X_API_KEY=actor_key.plaintext).json()["history"]
    assert [(h["from_status"], h["to_status"], h["by_key"], h["by"]) for h in history] == [
        ("open", "acknowledged", label, None)
    ]


def test_resolve_and_dismiss_with_a_key_record_the_key(client, make_alert, actor_key):
    label = f"pagerbot ({actor_key.api_key.prefix}…)"
    first, second = make_alert(entity_id="stu_1"), make_alert(entity_id="stu_2")
    headers = {"HTTP_AUTHORIZATION": f"Bearer {actor_key.plaintext}"}
    assert client.post(f"/api/alerts/{first.pk}/resolve", **headers).json()["closed_by_key"] == label
    resp = client.post(
        f"/api/alerts/{second.pk}/dismiss",
        {"reason": "duplicate"},
        content_type="application/json",
        **headers,
    )
    assert resp.json()["closed_by_key"] == label and resp.json()["dismiss_reason"] == "duplicate"


def test_a_staff_session_records_the_user_and_no_key(client, make_alert, staff_user):
    alert = make_alert()
    client.force_login(staff_user)
    body = client.post(f"/api/alerts/{alert.pk}/acknowledge").json()
    assert body["acknowledged_by"] == "ops" and body["acknowledged_by_key"] is None
    history = client.get(f"/api/alerts/{alert.pk}").json()["history"]
    assert history[0]["by"] == "ops" and history[0]["by_key"] is None


def test_the_drawer_and_the_admin_show_the_key(client, make_alert, actor_key, staff_user):
    alert = make_alert()
    client.post(f"/api/alerts/{alert.pk}/acknowledge", HTTP_X_API_KEY=actor_key.plaintext)
    client.force_login(staff_user)
    staff_user.is_superuser = True
    staff_user.save()
    label = f"pagerbot ({actor_key.api_key.prefix}…)"
    drawer = client.get(f"/alerts/{alert.pk}", HTTP_HX_REQUEST="true").content.decode()
    assert f'by API key <span class="id" data-by-key>{label}</span>' in drawer
    admin = client.get(f"/admin/alerts/alert/{alert.pk}/change/").content.decode()
    assert label in admin


def test_unknown_alert_is_a_json_404(client, actor_key):
    resp = client.get("/api/alerts/987654", HTTP_X_API_KEY=actor_key.plaintext)
    assert resp.status_code == 404 and resp.json()["errors"][0]["field"] == "id"


def test_the_operator_label_of_a_key_action_names_the_key(client, admin_client, make_alert, actor_key):
    """The feedback label (graded on /quality) says which key dismissed, as the alert's history does."""
    alert = make_alert()
    resp = client.post(
        f"/api/alerts/{alert.pk}/dismiss",
        {"reason": "false_positive"},
        content_type="application/json",
        HTTP_X_API_KEY=actor_key.plaintext,
    )
    assert resp.status_code == 200
    html = admin_client.get("/admin/alerts/alertlabel/").content.decode()
    assert f"pagerbot ({actor_key.api_key.prefix}…)" in html and "false_positive" in html.lower().replace(
        " ", "_"
    )


def test_a_silence_made_with_a_key_names_the_key(client, make_alert, actor_key):
    body = {"alert_type": "low_health_score", "duration_minutes": 60, "reason": "maintenance window"}
    resp = client.post(
        "/api/silences", body, content_type="application/json", HTTP_X_API_KEY=actor_key.plaintext
    )
    assert resp.status_code == 201, resp.content
    made = resp.json()
    assert made["created_by"] is None and made["created_by_key"] == f"pagerbot ({actor_key.api_key.prefix}…)"
