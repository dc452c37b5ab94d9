"""The after-commit list of a pass: one broadcast per batch (with the insights scored inline), nothing
before the commit, and one push per alert status change whichever front end made it."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine

from alerts.models import Alert
from conftest import READING_CRITICAL, event, platform_reading, watched_student
from insights.models import Insight

pytestmark = pytest.mark.django_db


@pytest.fixture
def pushed(monkeypatch):
    """Changes pushed to open dashboards (the channel layer is the edge)."""
    sent = []
    monkeypatch.setattr("iops.lib.realtime._publish_now", sent.append)
    return sent


@pytest.mark.django_db(transaction=True)  # real commits: the insight's own on-commit push runs inside ours
def test_a_batch_that_raises_an_alert_makes_one_broadcast_with_its_insight(post, drain, pushed):
    watched_student(post, drain)
    pushed.clear()
    reading = event("customer_health_update", student_id="stu_1", health_score=READING_CRITICAL)
    assert post(reading).status_code == 202
    drain()
    alert = Alert.objects.get(type="low_health_score")
    insight = Insight.objects.get(alert_id=alert.pk)  # scored inline (embedded mode's eager Celery)
    assert len(pushed) == 1, pushed
    [change] = pushed
    assert change.events == 1 and change.alerts_created == [alert.pk] and change.insights == [insight.pk]


def test_nothing_is_pushed_before_the_batch_commits(post, drain, pushed, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        platform_reading(post, drain, READING_CRITICAL)
    assert Alert.objects.filter(type="low_health_score").exists()
    assert pushed == [] and callbacks  # the push waits for the commit


@pytest.mark.parametrize("front_end", ["page", "api", "admin"])
def test_a_status_change_is_pushed_once_whichever_front_end_made_it(
    front_end, client, admin_user, post, drain, pushed, django_capture_on_commit_callbacks
):
    platform_reading(post, drain, READING_CRITICAL)
    alert = Alert.objects.get(type="low_health_score")
    client.force_login(admin_user)  # the admin action needs the change permission
    pushed.clear()
    with django_capture_on_commit_callbacks(execute=True):
        if front_end == "page":
            resp = client.post(f"/alerts/{alert.pk}/acknowledge")
        elif front_end == "api":
            resp = client.post(f"/api/alerts/{alert.pk}/acknowledge")
        else:
            resp = client.post(
                "/admin/alerts/alert/", {"action": "acknowledge", "_selected_action": [alert.pk]}
            )
    assert resp.status_code in (200, 302)
    alert.refresh_from_db()
    assert alert.status == "acknowledged"
    assert [c.alerts_updated for c in pushed] == [[alert.pk]]


def test_a_silence_that_ends_by_itself_is_pushed_by_the_next_sweep(
    client, admin_user, post, drain, pushed, django_capture_on_commit_callbacks
):
    """Open dashboards unmute the row when the silence runs out, without a reload."""
    from django.utils import timezone

    from pipeline.tasks import sweep

    platform_reading(post, drain, READING_CRITICAL)
    alert = Alert.objects.get(type="low_health_score")
    client.force_login(admin_user)
    body = {"entity_type": "student", "entity_id": "stu_1", "duration_minutes": 30, "reason": "call booked"}
    assert client.post("/api/silences", data=body, content_type="application/json").status_code == 201
    start = timezone.now()
    for minutes, expect_pushed in ((10, False), (30.2, True)):
        pushed.clear()
        with (
            time_machine.travel(start + timedelta(minutes=minutes), tick=False),
            django_capture_on_commit_callbacks(execute=True),
        ):
            sweep.apply().get()
        updated = {pk for change in pushed for pk in change.alerts_updated}
        assert (alert.pk in updated) is expect_pushed, (minutes, pushed)
