"""Workers raising the same new alerts at the same moment (PostgreSQL, real concurrent transactions):
one alert per condition, one "raised" transition each, and the sightings counted once per tick
(ALERT_REPEAT_TICK_SECONDS) however many workers see them.

In practice the workers queue on the entity's snapshot rows (each batch upserts them) before the
rules run, so the later ones see the alert the first committed; the partial unique index behind
`one_active_alert_per_fingerprint` is the safety net, its fallback forced in
test_lifecycle.py::test_insert_race_falls_back_to_counting_a_repeat."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from alerts.models import Alert, AlertTransition
from conftest import race

WORKERS = 4
STUDENTS = 20


def batch(worker: int, now, tag: str = "a") -> list[dict]:
    """Every worker sees the same 20 students fall below the critical health line (its own events)."""
    return [
        {
            "event_id": f"w{worker}_h{i}_{tag}",
            "event_type": "customer_health_update",
            "timestamp": now.isoformat(),
            "received_at": now.isoformat(),
            "payload": {"student_id": f"stu_race_{i}", "health_score": 30.0},
        }
        for i in range(STUDENTS)
    ]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_workers_raising_the_same_alerts_at_once_open_each_once_and_count_a_tick_once():
    from pipeline.batch import process_batch

    if connection.vendor != "postgresql":
        pytest.skip("concurrent transactions: PostgreSQL")
    now = timezone.now()
    history = [
        {
            "event_id": f"hist_{i}",
            "event_type": "customer_health_update",
            "timestamp": (now - timedelta(days=20)).isoformat(),
            "received_at": now.isoformat(),
            "payload": {"student_id": f"stu_race_{i}", "health_score": 85.0},
        }
        for i in range(STUDENTS)
    ]
    process_batch(history, now=now)  # weeks of history: the students are scored
    race(*[lambda w=w: process_batch(batch(w, now), now=now) for w in range(WORKERS)])
    alerts = Alert.objects.filter(type="low_health_score")
    assert alerts.count() == STUDENTS
    assert sorted(set(alerts.values_list("occurrences", flat=True))) == [1]  # the others: same tick
    assert set(alerts.values_list("status", "severity")) == {("open", "critical")}
    raised = AlertTransition.objects.filter(note="raised", alert__type="low_health_score")
    assert raised.count() == STUDENTS
    # After the tick every worker sees the conditions again, at once: each alert counts one more
    # (the row lock makes the later workers see the first one's count), never one per worker.
    later = now + timedelta(seconds=settings.ALERT_REPEAT_TICK_SECONDS + 1)
    race(*[lambda w=w: process_batch(batch(w, later, tag="b"), now=later) for w in range(WORKERS)])
    assert sorted(set(alerts.values_list("occurrences", flat=True))) == [2]
    assert set(alerts.values_list("last_seen", flat=True)) == {later}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_workers_reading_a_repeat_due_at_once_count_it_once(monkeypatch):
    """Both workers read the alerts unlocked while the tick is due; only the rows to write are locked
    and decided again, so the second sees the first one's count and writes nothing."""
    import threading

    from django.db import transaction

    from alerts import services
    from alerts.services import alerts_evaluate
    from pipeline.batch import process_batch

    if connection.vendor != "postgresql":
        pytest.skip("concurrent transactions: PostgreSQL")
    now = timezone.now()
    old = [
        dict(e, event_id=f"old_{i}", timestamp=(now - timedelta(days=20)).isoformat())
        for i, e in enumerate(batch(0, now))
    ]
    for e in old:
        e["payload"] = dict(e["payload"], health_score=85.0)
    process_batch(old, now=now)
    process_batch(batch(0, now), now=now)
    alerts = Alert.objects.filter(type="low_health_score")
    assert alerts.count() == STUDENTS and set(alerts.values_list("occurrences", flat=True)) == {1}

    both_read = threading.Barrier(2)
    active = services._active

    def read_together(fps, *, lock):
        rows = active(fps, lock=lock)
        if not lock:
            both_read.wait(timeout=10)  # both decided on the same unlocked read
        return rows

    monkeypatch.setattr(services, "_active", read_together)
    later = now + timedelta(seconds=settings.ALERT_REPEAT_TICK_SECONDS + 1)
    students = [f"stu_race_{i}" for i in range(STUDENTS)]
    results: list[int] = []

    def evaluate() -> None:
        with transaction.atomic():
            results.append(len(alerts_evaluate(now=later, students=students)))

    race(evaluate, evaluate)
    assert sorted(results) == [0, STUDENTS]  # one worker counted the tick and reports the updates
    assert set(alerts.values_list("occurrences", flat=True)) == {2}
    assert set(alerts.values_list("last_seen", flat=True)) == {later}
