"""Lifecycle: repeats and clears, auto-resolve and cooldown with frozen time, illegal transitions,
and the batched evaluation (constant statements per batch, race fallback)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.cache import cache
from django.db import connection
from django.test import TestCase
from django.test.utils import CaptureQueriesContext

from alerts.models import Alert
from conftest import READING_CRITICAL, READING_WARNING, READING_WARNING_LOWER, event, platform_reading
from pipeline.tasks import sweep

pytestmark = pytest.mark.django_db
T = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


def at(minutes: float) -> datetime:
    return T + timedelta(minutes=minutes)


def health(post, drain, score, *, minute: float = 0, student="stu_1"):
    """A platform reading at T + `minute` for a student IOps has watched for weeks (usually read 85)."""
    with time_machine.travel(at(minute), tick=False):
        platform_reading(post, drain, score, student=student)


def run_sweep(minute: float):
    with time_machine.travel(at(minute), tick=False), TestCase.captureOnCommitCallbacks(execute=True):
        return sweep.apply().get()


@pytest.fixture
def pushed(monkeypatch):
    """Changes pushed to open dashboards (the channel layer is the edge)."""
    sent = []
    monkeypatch.setattr("iops.lib.realtime._publish_now", sent.append)
    return sent


def test_condition_clear_sets_clear_since_and_a_repeat_clears_it(post, drain):
    health(post, drain, READING_WARNING)
    health(post, drain, 85, minute=5)
    alert = Alert.objects.get()
    assert alert.status == "open" and alert.clear_since == at(5) and alert.occurrences == 1
    health(post, drain, READING_WARNING_LOWER, minute=10)
    alert.refresh_from_db()
    assert alert.clear_since is None and alert.occurrences == 2 and alert.last_seen == at(10)


def test_repeats_count_once_per_tick_and_escalations_at_once(post, drain, pushed, settings):
    """A repeat inside ALERT_REPEAT_TICK_SECONDS writes nothing and is not pushed, even with moved
    figures; the first repeat after the tick counts once and quotes the current figures; an escalation
    is written at once, tick or not."""
    settings.ALERT_REPEAT_TICK_SECONDS = 60

    def reading(score, minute):
        pushed.clear()
        with TestCase.captureOnCommitCallbacks(execute=True):
            health(post, drain, score, minute=minute)
        alert.refresh_from_db()
        return [c for c in pushed if c.events]  # the batch's push (it names what the batch changed)

    health(post, drain, READING_WARNING)
    alert = Alert.objects.get()
    first_message = alert.message
    [push] = reading(READING_WARNING_LOWER, 0.5)
    assert (alert.occurrences, alert.last_seen, alert.message) == (1, at(0), first_message)
    assert alert.pk not in push.alerts_updated
    [push] = reading(READING_WARNING_LOWER, 1.5)
    assert (alert.occurrences, alert.last_seen, alert.severity) == (2, at(1.5), "warning")
    assert alert.message != first_message  # the moved figures, caught up at the tick
    assert alert.pk in push.alerts_updated
    [push] = reading(READING_CRITICAL, 1.7)
    assert (alert.occurrences, alert.severity, alert.last_seen) == (3, "critical", at(1.7))
    assert alert.transitions.filter(note__startswith="escalated").count() == 1
    assert alert.pk in push.alerts_updated


def test_auto_resolve_after_the_condition_stays_clear(post, drain, pushed):
    health(post, drain, READING_WARNING)
    health(post, drain, 85, minute=1)
    assert run_sweep(30)["resolved"] == 0  # clear for 29 minutes
    assert Alert.objects.get().status == "open"
    result = run_sweep(31)  # clear for ALERT_AUTO_RESOLVE_MINUTES
    alert = Alert.objects.get()
    assert result["resolved"] == 1 and alert.status == "resolved" and alert.closed_at == at(31)
    assert alert.closed_by is None
    last = alert.transitions.last()
    assert (last.from_status, last.to_status, last.note, last.by) == (
        "open",
        "resolved",
        "auto-resolved",
        None,
    )
    assert any(alert.pk in change.alerts_updated for change in pushed)


def test_acknowledged_alerts_auto_resolve_too(client, staff_user, post, drain):
    health(post, drain, READING_WARNING)
    client.force_login(staff_user)
    assert client.post(f"/api/alerts/{Alert.objects.get().pk}/acknowledge").status_code == 200
    health(post, drain, 85, minute=2)
    run_sweep(40)
    assert Alert.objects.get().status == "resolved"


def test_the_stale_refresh_sees_an_alert_clear_without_new_events(post, drain, settings):
    from pipeline.tasks import refresh_stale

    health(post, drain, READING_WARNING)
    settings.ALERT_LOW_HEALTH_WARNING = 50  # the condition no longer holds: nothing new arrives
    with time_machine.travel(at(61), tick=False):
        refresh_stale.apply()  # an hour on, the snapshot is re-read and its rules re-run
    assert Alert.objects.get(type="low_health_score").clear_since == at(61)
    run_sweep(91)
    assert Alert.objects.get(type="low_health_score").status == "resolved"


def test_cooldown_after_dismissal(client, staff_user, post, drain):
    health(post, drain, READING_WARNING)
    client.force_login(staff_user)
    alert = Alert.objects.get()
    with time_machine.travel(at(1), tick=False):
        resp = client.post(
            f"/api/alerts/{alert.pk}/dismiss", {"reason": "known_issue"}, content_type="application/json"
        )
    assert resp.status_code == 200
    health(post, drain, READING_WARNING, minute=30)  # within ALERT_COOLDOWN_MINUTES of the dismissal
    assert Alert.objects.count() == 1
    health(post, drain, READING_WARNING, minute=62)
    assert Alert.objects.filter(status="open").count() == 1 and Alert.objects.count() == 2


def test_a_higher_severity_breaks_through_the_cooldown(client, staff_user, post, drain):
    health(post, drain, READING_WARNING)
    client.force_login(staff_user)
    alert = Alert.objects.get()
    client.post(
        f"/api/alerts/{alert.pk}/dismiss", {"reason": "false_positive"}, content_type="application/json"
    )
    health(post, drain, READING_CRITICAL, minute=5)
    assert Alert.objects.get(status="open").severity == "critical"


def test_cooldown_after_auto_resolve_stops_flapping(post, drain):
    health(post, drain, READING_WARNING)
    health(post, drain, 85, minute=1)
    run_sweep(31)
    health(post, drain, READING_WARNING, minute=40)
    assert list(Alert.objects.values_list("status", flat=True)) == ["resolved"]
    health(post, drain, READING_WARNING, minute=92)
    assert Alert.objects.filter(status="open").count() == 1


def test_cooldown_zero_reopens_at_once(post, drain, settings):
    settings.ALERT_COOLDOWN_MINUTES = 0
    health(post, drain, READING_WARNING)
    health(post, drain, 85, minute=1)
    run_sweep(31)
    health(post, drain, READING_WARNING, minute=32)
    assert Alert.objects.filter(status="open").count() == 1


def test_sweep_escalates_a_sustained_imbalance_without_counting_a_repeat(post, drain, pushed):
    with time_machine.travel(T, tick=False):
        post(
            event(
                "supply_demand_update", subject="Mathematics", region="west", demand_score=59, supply_score=39
            )
        )
        drain()
    alert = Alert.objects.get()
    assert alert.severity == "info"
    run_sweep(59)
    alert.refresh_from_db()
    assert alert.severity == "info"
    run_sweep(60)
    alert.refresh_from_db()
    assert alert.severity == "warning" and alert.occurrences == 1
    assert alert.transitions.last().note == "escalated info → warning"
    assert any(alert.pk in change.alerts_updated for change in pushed)


def test_an_alert_escalated_by_the_sweep_is_routed_to_the_channels(post, drain, make_channel):
    """The sweep raises and escalates without an event; its alerts reach the channels like a batch's."""
    from alerts.models import AlertDelivery

    info_up = make_channel("email", min_severity="info")
    warnings_up = make_channel("email", min_severity="warning")
    with time_machine.travel(T, tick=False), TestCase.captureOnCommitCallbacks(execute=True):
        post(
            event(
                "supply_demand_update", subject="Mathematics", region="west", demand_score=59, supply_score=39
            )
        )
        drain()
    assert list(AlertDelivery.objects.values_list("channel_id", "trigger")) == [(info_up.pk, "opened")]
    run_sweep(60)
    assert set(AlertDelivery.objects.filter(severity="warning").values_list("channel_id", "trigger")) == {
        (info_up.pk, "escalated"),
        (warnings_up.pk, "escalated"),
    }


@pytest.mark.parametrize(
    ("first", "then"),
    [
        ("resolve", "acknowledge"),
        ("resolve", "resolve"),
        ("resolve", "dismiss"),
        ("dismiss", "resolve"),
        ("dismiss", "acknowledge"),
    ],
)
def test_illegal_transitions_are_refused_with_409(client, staff_user, post, drain, first, then):
    health(post, drain, READING_WARNING)
    alert = Alert.objects.get()
    client.force_login(staff_user)
    body = {"reason": "other", "note": "because"}
    assert (
        client.post(f"/api/alerts/{alert.pk}/{first}", body, content_type="application/json").status_code
        == 200
    )
    resp = client.post(f"/api/alerts/{alert.pk}/{then}", body, content_type="application/json")
    assert resp.status_code == 409 and resp.json()["error"].startswith(f"cannot {then}")
    alert.refresh_from_db()
    assert alert.transitions.count() == 2


def test_unknown_alert_is_404(client, staff_user):
    client.force_login(staff_user)
    assert client.post("/api/alerts/999999/acknowledge").status_code == 404


# --- batched evaluation --------------------------------------------------------------------------


def alert_statements(post, drain, students: int, score: float, minute: float) -> int:
    events = [
        event("customer_health_update", student_id=f"stu_{i}", health_score=score) for i in range(students)
    ]
    with time_machine.travel(at(minute), tick=False):
        post({"events": events})
        with CaptureQueriesContext(connection) as ctx:
            drain()
    return sum("alerts_alert" in q["sql"] for q in ctx.captured_queries)


def watch(post, drain, students: int) -> None:
    """`students` students with weeks of history (see conftest.watched_student), in one batch."""
    history = [
        e
        for i in range(students)
        for e in (
            event(
                "session_completed",
                session_id=f"h{i}",
                student_id=f"stu_{i}",
                tutor_id="tut_h",
                timestamp=(T - timedelta(days=20)).isoformat(),
            ),
            event(
                "customer_health_update",
                student_id=f"stu_{i}",
                health_score=85,
                timestamp=(T - timedelta(days=15)).isoformat(),
            ),
        )
    ]
    with time_machine.travel(T, tick=False):
        post({"events": history})
        drain()


def test_alert_statements_per_batch_do_not_grow_with_candidates(post, drain):
    watch(post, drain, 150)
    few = alert_statements(post, drain, 5, READING_WARNING, 0)
    many = alert_statements(post, drain, 150, READING_WARNING, 1)  # 5 repeats + 145 new
    assert Alert.objects.count() == 150 and Alert.objects.filter(occurrences=2).count() == 5
    # Before batching: a SELECT and an INSERT/UPDATE (+ transition) per candidate, 300+ here. Now a handful,
    # split only by the database's parameter limits (SQLite bulk INSERTs of ~90 rows).
    assert few <= 5 and many <= 10, (few, many)


def test_one_alert_per_fingerprint_within_a_batch(post, drain):
    watch(post, drain, 2)
    events = [
        event("customer_health_update", student_id="stu_1", health_score=s, timestamp=at(i - 3).isoformat())
        for i, s in enumerate((READING_WARNING_LOWER, READING_CRITICAL, READING_WARNING))
    ]
    with time_machine.travel(T, tick=False):
        post({"events": events})
        drain()
    alert = Alert.objects.get()
    assert alert.occurrences == 1 and alert.severity == "warning"  # the latest reading wins


def test_insert_race_falls_back_to_counting_a_repeat(post, drain, monkeypatch, settings):
    settings.ALERT_REPEAT_TICK_SECONDS = 60
    health(post, drain, READING_WARNING)
    first = Alert.objects.get()
    import alerts.services

    # Another worker's alert is invisible to this worker's SELECT: the bulk INSERT hits the constraint.
    monkeypatch.setattr(alerts.services, "_active", lambda fps, lock: {})
    health(post, drain, READING_WARNING_LOWER, minute=0.5)  # inside the tick the other worker counted
    alert = Alert.objects.get()
    assert (alert.occurrences, alert.last_seen, alert.message) == (1, at(0), first.message)
    health(post, drain, READING_WARNING_LOWER, minute=1)
    alert = Alert.objects.get()
    assert alert.occurrences == 2 and alert.status == "open" and alert.last_seen == at(1)
