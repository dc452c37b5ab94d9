"""Alert actions from the dashboard: htmx POSTs with CSRF, lifecycle answers, and the panel."""

from __future__ import annotations

import pytest
from django.test import Client

from alerts.models import Alert
from dashboard.tests.conftest import make_alert, make_insight, make_student

pytestmark = pytest.mark.django_db
HX = {"HTTP_HX_REQUEST": "true"}


def test_acknowledge_returns_the_updated_row_and_records_who(staff_client, staff_user):
    alert = make_alert()
    resp = staff_client.post(
        f"/alerts/{alert.pk}/acknowledge", **HX, HTTP_HX_CURRENT_URL="http://testserver/"
    )
    assert resp.status_code == 200
    html = resp.content.decode()
    assert f'data-alert-id="{alert.pk}"' in html and 'data-status="acknowledged"' in html
    assert 'data-action="acknowledge"' not in html and 'data-action="resolve"' in html
    alert.refresh_from_db()
    assert alert.status == "acknowledged" and alert.acknowledged_by == staff_user


def test_dismiss_needs_a_reason_and_keeps_it(staff_client):
    alert = make_alert()
    resp = staff_client.post(f"/alerts/{alert.pk}/dismiss", {"reason": "  "}, **HX)
    assert resp.status_code == 400 and "reason" in resp.content.decode()
    resp = staff_client.post(f"/alerts/{alert.pk}/dismiss", {"reason": "known_issue", "note": "outage"}, **HX)
    assert resp.status_code == 200
    alert.refresh_from_db()
    assert alert.status == "dismissed" and alert.dismiss_reason == "known_issue: outage"
    assert (alert.label.label, alert.label.reason) == ("dismissed", "known_issue")
    assert 'role="group"' not in resp.content.decode()  # no more actions on a closed alert


def test_a_transition_the_lifecycle_forbids_is_409(staff_client):
    alert = make_alert(status="resolved")
    resp = staff_client.post(f"/alerts/{alert.pk}/acknowledge", **HX)
    assert resp.status_code == 409 and resp["Content-Type"].startswith("text/plain")


def test_unknown_alert_or_action_is_404(staff_client):
    alert = make_alert()
    assert staff_client.post("/alerts/999999/resolve", **HX).status_code == 404
    assert staff_client.post(f"/alerts/{alert.pk}/explode", **HX).status_code == 404


def test_actions_refuse_anonymous_and_non_staff(client, outsider):
    alert = make_alert()
    assert client.post(f"/alerts/{alert.pk}/resolve", **HX).status_code == 403
    client.force_login(outsider)
    assert client.post(f"/alerts/{alert.pk}/resolve", **HX).status_code == 403
    assert Alert.objects.get(pk=alert.pk).status == "open"


def test_actions_without_the_csrf_token_are_refused(staff_user):
    alert = make_alert()
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(staff_user)
    page = browser.get("/")
    assert page.status_code == 200
    resp = browser.post(f"/alerts/{alert.pk}/acknowledge", **HX)
    assert resp.status_code == 403
    assert Alert.objects.get(pk=alert.pk).status == "open"
    # The token the page hands to htmx (hx-headers on <body>) is accepted.
    token = page.context["csrf_token"]
    assert f'"X-CSRFToken": "{token}"' in page.content.decode()
    resp = browser.post(f"/alerts/{alert.pk}/acknowledge", HTTP_X_CSRFTOKEN=str(token), **HX)
    assert resp.status_code == 200
    assert Alert.objects.get(pk=alert.pk).status == "acknowledged"


def test_action_from_the_panel_returns_the_panel_and_an_oob_row(staff_client):
    alert = make_alert()
    resp = staff_client.post(f"/alerts/{alert.pk}/resolve", **HX, HTTP_HX_TARGET="panel-body")
    html = resp.content.decode()
    assert resp.status_code == 200 and 'id="panel-title"' in html
    assert f'id="alert-{alert.pk}"' in html and 'hx-swap-oob="true"' in html


def test_action_publishes_one_change_note_after_commit(
    staff_client, monkeypatch, django_capture_on_commit_callbacks
):
    sent = []
    monkeypatch.setattr("iops.lib.realtime._publish_now", sent.append)
    alert = make_alert()
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(f"/alerts/{alert.pk}/resolve", **HX)
    assert [c.alerts_updated for c in sent] == [[alert.pk]]


def test_panel_shows_the_linked_insight_drivers_and_health_components(staff_client):
    make_student("stu_1")
    alert = make_alert(entity_id="stu_1")
    make_insight("stu_1", explanation="an older one for the entity", risk=0.1, level="low")
    make_insight("stu_1", alert_id=alert.pk)
    resp = staff_client.get(f"/alerts/{alert.pk}", **HX)
    html = resp.content.decode()
    assert resp.status_code == 200
    assert "Sessions fell and support calls rose." in html and "an older one" not in html
    assert "Offer a free session" in html and "local-logistic-v1" in html
    assert 'data-chart="panel-drivers"' in html and 'id="panel-drivers"' in html
    assert "ib_calls_14d" in html
    assert "1 session in 7 days vs 2.0/week before" in html  # a health component's reason
    assert "<html" not in html  # a fragment for the drawer


def test_panel_falls_back_to_the_entitys_latest_insight_then_to_none(staff_client):
    alert = make_alert(entity_id="stu_2")
    html = staff_client.get(f"/alerts/{alert.pk}", **HX).content.decode()
    assert "No insight has been scored" in html
    make_insight("stu_2", explanation="latest for the student")
    html = staff_client.get(f"/alerts/{alert.pk}", **HX).content.decode()
    assert "latest for the student" in html


def test_alert_page_without_htmx_is_a_full_page(staff_client):
    alert = make_alert()
    resp = staff_client.get(f"/alerts/{alert.pk}")
    assert resp.status_code == 200 and "<html" in resp.content.decode()
    assert staff_client.get("/alerts/987654").status_code == 404
