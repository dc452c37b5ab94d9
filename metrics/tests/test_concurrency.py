"""Workers folding overlapping batches at the same time (PostgreSQL): every session counts once, the
earliest event wins, and first/last-session facts equal a rebuild's, however the races fall."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.management import call_command
from django.db import connection

from conftest import race
from metrics.models import Session, StudentHourly, StudentSessionFacts, StudentSnapshot, TutorHourly
from metrics.services import SESSION_VALUES, STUDENT_VALUES, snapshots_refresh
from metrics.tests.conftest import table_dump

NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
WORKERS = 4


def batch(worker: int) -> list[dict]:
    """The same 40 sessions (10 students) in every worker's batch, each worker with its own start and
    completion events at its own times: the earliest across workers must win."""
    events = []
    for i in range(40):
        session = {"session_id": f"s{i}", "student_id": f"stu_{i % 10}", "tutor_id": f"tut_{i % 3}"}
        start = NOW - timedelta(days=i % 9, hours=2, minutes=7 * worker)
        done = start + timedelta(minutes=50 + 13 * ((worker + i) % 4))
        for kind, ts, extra in (
            ("session_started", start, {"subject": "Physics"}),
            (
                "session_completed",
                done,
                {"student_rating": 1 + (worker + i) % 5, "completed_successfully": (worker + i) % 3 != 0},
            ),
        ):
            events.append(
                {
                    "event_id": f"w{worker}_{kind}_{i}",
                    "event_type": kind,
                    "timestamp": ts.isoformat(),
                    "received_at": NOW.isoformat(),
                    "payload": {**session, **extra},
                }
            )
    return events


def facts() -> dict:
    return {
        f.student_id: (f.first_completed_at, f.first_session_id, f.first_ok, f.last_completed_at)
        for f in StudentSessionFacts.objects.all()
    }


def dump() -> dict:
    return {
        "Session": table_dump(Session),
        "StudentHourly": table_dump(StudentHourly, skip_zero=tuple(STUDENT_VALUES)),
        "TutorHourly": table_dump(TutorHourly, skip_zero=tuple(SESSION_VALUES)),
        "facts": facts(),
        "first_last": {
            s.student_id: (s.first_session_at, s.first_session_id, s.first_session_ok, s.last_session_at)
            for s in StudentSnapshot.objects.all()
        },
    }


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_over_the_same_sessions_equal_a_rebuild():
    from pipeline.batch import process_batch

    if connection.vendor != "postgresql":
        pytest.skip("concurrent transactions: PostgreSQL")
    race(*[lambda w=w: process_batch(batch(w), now=NOW) for w in range(WORKERS)])
    assert Session.objects.count() == 40
    # Windows refreshed by racing workers may each miss the others' buckets until the next refresh;
    # first/last sessions come from the facts, which must already be exact.
    snapshots_refresh(students=[f"stu_{i}" for i in range(10)], tutors=[], now=NOW)
    incremental = dump()
    with time_machine.travel(NOW, tick=False):
        call_command("rebuild_metrics", "--no-progress", stdout=io.StringIO())
    assert dump() == incremental
    first = StudentSessionFacts.objects.get(student_id="stu_0")
    assert first.first_session_id == "s30" and first.last_completed_at is not None  # 3 days ago


def ib_calls(worker: int) -> list[dict]:
    """Calls by the worker's own students, all in one minute: the only row two workers share is the
    global minute series' row for that minute."""
    return [
        {
            "event_id": f"w{worker}_ib_{i}",
            "event_type": "ib_call_logged",
            "timestamp": NOW.isoformat(),
            "received_at": NOW.isoformat(),
            "payload": {"student_id": f"stu_w{worker}_{i}", "call_id": f"c{worker}_{i}", "reason": "billing"},
        }
        for i in range(5)
    ]


def fold_together(monkeypatch, shards: tuple[int, int]) -> list[BaseException | None]:
    """Two workers each fold a batch into the same minute in an open transaction (a 1 s lock_timeout)
    and commit only once both folded: the outcome of each, None when it folded without waiting."""
    import threading

    from django.db import transaction

    from metrics.services import buckets, fold_events

    mine = threading.local()
    monkeypatch.setattr(buckets, "minute_shard", lambda: mine.shard)
    folded = threading.Barrier(2)
    outcomes: list[BaseException | None] = [None, None]

    def work(worker: int) -> None:
        mine.shard = shards[worker]
        try:
            with transaction.atomic():
                connection.cursor().execute("SET LOCAL lock_timeout = '1s'")
                fold_events(ib_calls(worker), now=NOW)
                folded.wait(timeout=10)  # holding the rows it wrote, as a batch does until it commits
        except BaseException as exc:  # noqa: BLE001 - the outcome the test asserts on
            outcomes[worker] = exc
            folded.abort()

    race(*[lambda w=w: work(w) for w in range(2)])
    return outcomes


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_workers_in_different_shards_fold_the_same_minute_without_waiting(monkeypatch):
    from django.db import OperationalError
    from django.db.models import Sum

    from metrics.models import GlobalMinute

    if connection.vendor != "postgresql":
        pytest.skip("concurrent transactions: PostgreSQL")
    assert fold_together(monkeypatch, (3, 4)) == [None, None]
    minute = GlobalMinute.objects.filter(minute=NOW)
    assert sorted(minute.values_list("shard", "ib_calls")) == [(3, 5), (4, 5)]
    # The same shard: one worker waits on the other's row until its lock_timeout (what one row a
    # minute did to every pair of workers).
    outcomes = fold_together(monkeypatch, (3, 3))
    assert any(isinstance(o, OperationalError) and "lock timeout" in str(o) for o in outcomes), outcomes
    assert minute.aggregate(n=Sum("ib_calls"))["n"] == 10  # neither committed: the other's wait was cut


def crossing(worker: int) -> list[dict]:
    """A tutor's availability and a session with the other worker's tutor: each batch writes its own
    tutor's snapshot first (the reading), then both tutors' (the refresh)."""
    mine, theirs = f"tut_x{worker}", f"tut_x{1 - worker}"
    at = (NOW - timedelta(hours=1)).isoformat()
    return [
        {
            "event_id": f"x{worker}_availability",
            "event_type": "tutor_availability_updated",
            "timestamp": at,
            "received_at": NOW.isoformat(),
            "payload": {"tutor_id": mine, "available_hours_this_week": 20.0, "subjects": ["Physics"]},
        },
        {
            "event_id": f"x{worker}_completed",
            "event_type": "session_completed",
            "timestamp": at,
            "received_at": NOW.isoformat(),
            "payload": {
                "session_id": f"sx{worker}",
                "student_id": f"stu_x{worker}",
                "tutor_id": theirs,
                "completed_successfully": True,
            },
        },
    ]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_batches_whose_readings_and_refreshes_cross_do_not_deadlock(monkeypatch):
    """Two workers each report one tutor's availability and complete a session of the other's tutor,
    with their readings written before either refreshes: neither batch is rolled back as a deadlock
    victim, and both tutors end with both batches' figures."""
    import threading

    from metrics.models import TutorSnapshot
    from metrics.services import fold as fold_module
    from pipeline.batch import process_batch

    if connection.vendor != "postgresql":
        pytest.skip("concurrent transactions: PostgreSQL")
    for worker in range(2):  # the tutors' snapshot rows exist, as for any tutor seen before
        process_batch([{**e, "event_id": f"seed_{e['event_id']}"} for e in crossing(worker)[:1]], now=NOW)
    apply = fold_module.AVAILABILITY.apply
    both_read = threading.Barrier(2)

    class Paused:
        """The availability reading, then a wait until the other worker wrote its own."""

        def apply(self, events, now):
            written = apply(events, now)
            with __import__("contextlib").suppress(threading.BrokenBarrierError):
                both_read.wait(timeout=3)
            return written

    monkeypatch.setattr(fold_module, "AVAILABILITY", Paused())
    race(*[lambda w=w: process_batch(crossing(w), now=NOW) for w in range(2)])
    sessions = dict(TutorSnapshot.objects.values_list("tutor_id", "sessions_7d"))
    assert sessions == {"tut_x0": 1, "tut_x1": 1}
