"""Silences (issue 19): the API (create, list, expire, bad input), the admin, and a delivery held back by a
silence while one it does not match is sent to a real local webhook peer."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from alerts.delivery import deliveries_enqueue, deliveries_send_due
from alerts.models import AlertDelivery, Silence

pytestmark = pytest.mark.django_db

JSON = "application/json"


@pytest.fixture
def staff(client, staff_user):
    client.force_login(staff_user)
    return client


def create(client, **body):
    return client.post("/api/silences", data=body, content_type=JSON)


# --- API -------------------------------------------------------------------------------------------


def test_create_list_and_expire_a_silence_over_the_api(staff):
    resp = create(staff, alert_type="low_health_score", cell="", duration_minutes=60, reason="campaign")
    assert resp.status_code == 201, resp.content
    made = resp.json()
    assert made["alert_type"] == "low_health_score" and made["state"] == "active"
    assert made["created_by"] == "ops" and made["reason"] == "campaign" and made["cell"] is None

    ids = lambda state: [s["id"] for s in staff.get(f"/api/silences?state={state}").json()["results"]]  # noqa: E731
    assert ids("active") == [made["id"]] and ids("expired") == []

    resp = staff.post(f"/api/silences/{made['id']}/expire")
    assert resp.status_code == 200 and resp.json()["state"] == "expired"
    assert ids("active") == [] and ids("expired") == [made["id"]]
    assert ids("all") == [made["id"]]


def test_a_silence_expires_by_itself(staff):
    resp = create(staff, entity_type="student", entity_id="stu_9", duration_minutes=30, reason="call booked")
    silence_id = resp.json()["id"]
    with time_machine.travel(timezone.now() + timedelta(minutes=31)):
        assert staff.get("/api/silences?state=active").json()["results"] == []
        expired = staff.get("/api/silences?state=expired").json()["results"]
        assert [s["id"] for s in expired] == [silence_id] and expired[0]["state"] == "expired"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"duration_minutes": 60, "reason": "x"}, "matchers"),
        ({"alert_type": "nope", "duration_minutes": 60, "reason": "x"}, "alert_type"),
        ({"entity_type": "student", "duration_minutes": 60, "reason": "x"}, "entity_id"),
        ({"cell": "no separator", "duration_minutes": 60, "reason": "x"}, "cell"),
        ({"alert_type": "velocity_drop", "duration_minutes": 60, "reason": "  "}, "reason"),
        ({"alert_type": "velocity_drop", "reason": "x"}, "ends_at"),
        ({"alert_type": "velocity_drop", "ends_at": "2020-01-01T00:00:00Z", "reason": "x"}, "ends_at"),
        ({"alert_type": "velocity_drop", "ends_at": "2099-01-01T00:00:00", "reason": "x"}, "ends_at"),
        ({"alert_type": "velocity_drop", "duration_minutes": 0, "reason": "x"}, "duration_minutes"),
        (
            {"alert_type": "velocity_drop", "duration_minutes": 60 * 24 * 91, "reason": "x"},
            "duration_minutes",
        ),
        ({"alert_type": "velocity_drop", "duration_minutes": 60}, "reason"),
    ],
)
def test_bad_silences_are_a_400_naming_the_field(staff, body, field):
    resp = create(staff, **body)
    assert resp.status_code == 400, resp.content
    assert field in [e["field"] for e in resp.json()["errors"]], resp.json()
    assert not Silence.objects.exists()


def test_silences_api_needs_auth_and_names_unknown_ids(client, staff):
    from django.test import Client

    anonymous = Client()
    assert anonymous.get("/api/silences").status_code == 401
    assert create(anonymous, alert_type="velocity_drop", duration_minutes=5, reason="x").status_code == 401
    resp = staff.post("/api/silences/999999/expire")
    assert resp.status_code == 404 and resp.json()["errors"]


def test_silences_are_in_the_openapi_document(staff):
    paths = staff.get("/api/openapi.json").json()["paths"]
    assert {"get", "post"} <= set(paths["/api/silences"])
    assert "post" in paths["/api/silences/{silence_id}/expire"]


# --- delivery -------------------------------------------------------------------------------------


def test_a_silenced_alert_is_recorded_but_not_sent_while_an_unmatched_one_is(
    staff, make_channel, make_alert, webhook_peer
):
    channel = make_channel("webhook", config={"url": webhook_peer.url})
    create(staff, entity_type="student", entity_id="stu_quiet", duration_minutes=240, reason="on a call")
    quiet = make_alert(entity_id="stu_quiet")
    loud = make_alert(entity_id="stu_loud")

    deliveries_enqueue(alert_ids=[quiet.pk, loud.pk], now=timezone.now())
    outcome = deliveries_send_due(now=timezone.now())

    assert outcome == {"sent": 1}
    assert [r["body"]["alert_id"] for r in webhook_peer.received] == [loud.pk]
    held = AlertDelivery.objects.get(alert=quiet, channel=channel)
    assert held.status == "silenced" and held.sent_at is None and held.silence is not None
    assert "on a call" in held.last_error
    assert AlertDelivery.objects.get(alert=loud).status == "sent"
    # The admin lists what each silence held back.
    from django.contrib.auth import get_user_model

    staff.force_login(get_user_model().objects.create_superuser("root", "r@example.com", "root-pass-123"))
    page = staff.get(f"/admin/alerts/alertdelivery/?silence__id__exact={held.silence_id}")
    assert page.status_code == 200
    rows = page.content.decode()
    assert "Not sent: silenced" in rows and "stu_quiet" in rows and "stu_loud" not in rows
    # ... and /metrics counts deliveries by status, the silenced ones included.
    metrics = staff.get("/metrics").content.decode()
    assert 'iops_alert_deliveries{status="silenced"} 1' in metrics
    assert 'iops_alert_deliveries{status="sent"} 1' in metrics


def test_a_silence_made_after_routing_still_holds_the_delivery_back(
    staff, make_channel, make_alert, webhook_peer
):
    make_channel("webhook", config={"url": webhook_peer.url})
    alert = make_alert(type="velocity_drop", severity="warning", entity_id="stu_2")
    deliveries_enqueue(alert_ids=[alert.pk], now=timezone.now())
    create(staff, alert_type="velocity_drop", duration_minutes=60, reason="known dip")

    assert deliveries_send_due(now=timezone.now()) == {"silenced": 1}
    assert webhook_peer.received == []
    assert AlertDelivery.objects.get(alert=alert).status == "silenced"


def test_an_expired_silence_no_longer_holds_deliveries(staff, make_channel, make_alert, webhook_peer):
    make_channel("webhook", config={"url": webhook_peer.url})
    silence_id = create(staff, alert_type="low_health_score", duration_minutes=60, reason="x").json()["id"]
    staff.post(f"/api/silences/{silence_id}/expire")
    alert = make_alert()
    deliveries_enqueue(alert_ids=[alert.pk], now=timezone.now())
    assert deliveries_send_due(now=timezone.now()) == {"sent": 1}
    assert [r["body"]["alert_id"] for r in webhook_peer.received] == [alert.pk]


def test_a_cell_silence_matches_only_that_cells_alerts(staff, make_channel, make_alert, webhook_peer):
    make_channel("webhook", config={"url": webhook_peer.url})
    create(
        staff, alert_type="supply_demand_imbalance", cell="Physics|west", duration_minutes=60, reason="hiring"
    )
    kw = {"type": "supply_demand_imbalance", "entity_type": "subject_region", "severity": "warning"}
    west = make_alert(entity_id="Physics|west", **kw)
    east = make_alert(entity_id="Physics|east", **kw)
    deliveries_enqueue(alert_ids=[west.pk, east.pk], now=timezone.now())
    deliveries_send_due(now=timezone.now())
    assert [r["body"]["alert_id"] for r in webhook_peer.received] == [east.pk]


# --- admin ----------------------------------------------------------------------------------------


def test_admin_lists_silences_by_state_and_expires_them(client, django_user_model, make_alert):
    admin_user = django_user_model.objects.create_superuser("root", "r@example.com", "root-pass-123")
    client.force_login(admin_user)
    resp = client.post(
        "/admin/alerts/silence/add/",
        {
            "alert_type": "velocity_drop",
            "entity_type": "",
            "entity_id": "",
            "cell": "",
            "starts_at_0": timezone.now().strftime("%Y-%m-%d"),
            "starts_at_1": timezone.now().strftime("%H:%M:%S"),
            "ends_at_0": (timezone.now() + timedelta(days=1)).strftime("%Y-%m-%d"),
            "ends_at_1": timezone.now().strftime("%H:%M:%S"),
            "reason": "migration week",
        },
    )
    assert resp.status_code == 302, resp.content.decode()[-3000:]
    silence = Silence.objects.get()
    assert silence.created_by == admin_user and silence.alert_type == "velocity_drop"
    page = client.get("/admin/alerts/silence/?state=active").content.decode()
    assert "migration week" in page and "type=velocity_drop" in page
    client.post(
        "/admin/alerts/silence/", {"action": "expire_now", "_selected_action": [silence.pk]}, follow=True
    )
    assert "migration week" in client.get("/admin/alerts/silence/?state=expired").content.decode()
    assert "migration week" not in client.get("/admin/alerts/silence/?state=active").content.decode()
    # No matcher at all is refused by the form.
    resp = client.post("/admin/alerts/silence/add/", {"reason": "x", "starts_at_0": "2026-01-01"})
    assert resp.status_code == 200 and Silence.objects.count() == 1
