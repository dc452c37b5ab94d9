"""Silences from the dashboard (issue 19): Snooze 4 h and Silence… on a row, the drawer and a group, with
CSRF; muted alerts marked in the feed and hidden by the muted filter."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from alerts.models import Silence
from dashboard.rendering import render_update
from dashboard.selectors import FeedFilters
from dashboard.tests.conftest import make_alert

pytestmark = pytest.mark.django_db
HX = {"HTTP_HX_REQUEST": "true", "HTTP_HX_CURRENT_URL": "http://testserver/"}


def test_snooze_with_the_pages_csrf_token_mutes_this_entity_and_type_for_4_hours(staff_user):
    alert = make_alert(entity_id="stu_7")
    other_type = make_alert(entity_id="stu_7", type="velocity_drop")
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(staff_user)
    page = browser.get("/")
    assert 'data-action="snooze"' in page.content.decode()
    assert browser.post(f"/alerts/{alert.pk}/snooze", **HX).status_code == 403  # no token

    before = timezone.now()
    resp = browser.post(f"/alerts/{alert.pk}/snooze", HTTP_X_CSRFTOKEN=str(page.context["csrf_token"]), **HX)

    assert resp.status_code == 200
    html = resp.content.decode()
    assert (
        f'data-alert-id="{alert.pk}"' in html
        and 'data-muted="true"' in html
        and 'class="muted-badge"' in html
    )
    assert 'data-action="snooze"' not in html  # already muted
    silence = Silence.objects.get()
    assert (silence.alert_type, silence.entity_type, silence.entity_id, silence.cell) == (
        "low_health_score",
        "student",
        "stu_7",
        "",
    )
    assert silence.created_by == staff_user and "snoozed 4 h" in silence.reason
    assert timedelta(hours=4) <= silence.ends_at - before < timedelta(hours=4, minutes=1)
    feed = browser.get("/").content.decode()
    muted_rows = [line for line in feed.splitlines() if 'data-muted="true"' in line]
    assert len(muted_rows) == 1 and f'data-alert-id="{alert.pk}"' in muted_rows[0]
    assert f'data-alert-id="{other_type.pk}"' in feed


def test_silence_this_type_for_this_cell_until_a_time(staff_client):
    kw = {"type": "supply_demand_imbalance", "entity_type": "subject_region", "message": "Physics / west"}
    alert = make_alert(entity_id="Physics|west", **kw)
    east = make_alert(entity_id="Physics|east", **kw)
    until = (timezone.localtime() + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")

    resp = staff_client.post(
        f"/alerts/{alert.pk}/silence",
        {"until": until, "reason": "tutors hired"},
        **HX,
        HTTP_HX_TARGET="panel-body",
    )

    assert resp.status_code == 200
    html = resp.content.decode()
    assert 'id="panel-title"' in html and "Muted until" in html and "tutors hired" in html
    silence = Silence.objects.get()
    assert (silence.alert_type, silence.cell, silence.entity_type) == (
        "supply_demand_imbalance",
        "Physics|west",
        "",
    )
    assert timezone.localtime(silence.ends_at).strftime("%Y-%m-%dT%H:%M") == until
    feed = staff_client.get("/").content.decode()
    assert feed.count('data-muted="true"') == 1
    assert f'data-alert-id="{east.pk}"' in feed


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"until": "tomorrow", "reason": "x"}, "until"),
        ({"until": "2001-01-01T00:00", "reason": "x"}, "ends_at"),
        ({"until": "2099-01-01T00:00", "reason": ""}, "reason"),
    ],
)
def test_a_bad_silence_form_is_a_400_naming_the_field(staff_client, form, field):
    alert = make_alert()
    resp = staff_client.post(f"/alerts/{alert.pk}/silence", form, **HX)
    assert resp.status_code == 400
    assert field in [e["field"] for e in resp.json()["errors"]]
    assert not Silence.objects.exists()


def test_silence_a_group_rows_type(staff_client):
    now = timezone.now()
    alerts = [make_alert(entity_id=f"stu_{i}", type="velocity_drop", now=now) for i in range(3)]
    page = staff_client.get("/").content.decode()
    assert 'data-action="silence-group"' in page  # three alerts raised together: a group row
    until = (timezone.localtime() + timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M")

    resp = staff_client.post(
        "/alerts/group/silence",
        {
            "alert_type": "velocity_drop",
            "alert_ids": [a.pk for a in alerts],
            "until": until,
            "reason": "holiday",
        },
        **HX,
    )

    assert resp.status_code == 200
    html = resp.content.decode()
    assert 'class="alert-group' in html and html.count('data-muted="true"') == 3
    assert Silence.objects.get().alert_type == "velocity_drop"


def test_the_muted_filter_hides_muted_alerts_and_the_default_shows_them(staff_client):
    muted = make_alert(entity_id="stu_m")
    loud = make_alert(entity_id="stu_l", type="velocity_drop")
    Silence.objects.create(
        alert_type="low_health_score",
        starts_at=timezone.now() - timedelta(minutes=1),
        ends_at=timezone.now() + timedelta(hours=1),
        reason="x",
        created_at=timezone.now(),
    )
    shown = staff_client.get("/").content.decode()
    assert f'data-alert-id="{muted.pk}"' in shown and 'data-muted="true"' in shown
    hidden = staff_client.get("/?muted=hide").content.decode()
    assert f'data-alert-id="{muted.pk}"' not in hidden and f'data-alert-id="{loud.pk}"' in hidden
    assert 'name="muted" value="hide" data-filter="muted" checked' in hidden
    # The live push with the filter removes a row that became muted.
    update = render_update(
        range_key="24h",
        filters=FeedFilters.parse(None, None, "hide"),
        now=timezone.now(),
        created=[],
        updated=[muted.pk],
    )
    assert f'id="alert-{muted.pk}" hx-swap-oob="delete"' in update


def test_an_expired_silence_leaves_the_row_unmuted(staff_client):
    alert = make_alert()
    Silence.objects.create(
        alert_type="low_health_score",
        starts_at=timezone.now() - timedelta(hours=2),
        ends_at=timezone.now() - timedelta(seconds=1),
        reason="x",
        created_at=timezone.now(),
    )
    page = staff_client.get("/").content.decode()
    assert f'data-alert-id="{alert.pk}"' in page and 'data-muted="true"' not in page


def test_silence_actions_refuse_non_staff(client, outsider):
    alert = make_alert()
    assert client.post(f"/alerts/{alert.pk}/snooze", **HX).status_code == 403
    client.force_login(outsider)
    assert client.post(f"/alerts/{alert.pk}/snooze", **HX).status_code == 403
    assert client.post("/alerts/group/silence", {"alert_type": "velocity_drop"}, **HX).status_code == 403
    assert not Silence.objects.exists()
