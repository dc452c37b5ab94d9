"""Rolling windows by event time, decaying as time passes; sessions counted once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from conftest import event
from metrics.models import StudentSnapshot, TutorSnapshot

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)


def completed(
    session_id: str, days_ago: float, *, student="stu_1", tutor="tut_1", rating=None, ok=True, **kw
):
    fields = {
        "session_id": session_id,
        "student_id": student,
        "tutor_id": tutor,
        "timestamp": (NOW - timedelta(days=days_ago)).isoformat(),
        "completed_successfully": ok,
        **kw,
    }
    if rating is not None:
        fields["student_rating"] = rating
    return event("session_completed", **fields)


def snapshot(student="stu_1") -> StudentSnapshot:
    return StudentSnapshot.objects.get(student_id=student)


@time_machine.travel(NOW, tick=False)
def test_session_10_days_old_counts_in_14d_and_30d_but_not_7d(post, drain):
    post({"events": [completed("s1", 10)]})
    drain()
    snap = snapshot()
    assert (snap.sessions_7d, snap.sessions_14d, snap.sessions_30d) == (0, 1, 1)


@pytest.mark.parametrize(
    ("days_ago", "expected"),
    [(6, (1, 1, 1)), (8, (0, 1, 1)), (13, (0, 1, 1)), (15, (0, 0, 1)), (29, (0, 0, 1)), (31, (0, 0, 0))],
)
@time_machine.travel(NOW, tick=False)
def test_window_boundaries(post, drain, days_ago, expected):
    post(completed("s1", days_ago))
    drain()
    snap = snapshot()
    assert (snap.sessions_7d, snap.sessions_14d, snap.sessions_30d) == expected


def test_windows_decay_as_time_passes_without_new_events(post, drain):
    from metrics.services import snapshots_refresh_stale

    with time_machine.travel(NOW, tick=False):
        post(completed("s1", 2))
        drain()
        assert snapshot().sessions_7d == 1
    later = NOW + timedelta(days=6)
    with time_machine.travel(later, tick=False):
        refreshed = snapshots_refresh_stale(now=later)
        assert (refreshed.students, refreshed.tutors) == ({"stu_1"}, {"tut_1"})
    snap = snapshot()
    assert (snap.sessions_7d, snap.sessions_14d) == (0, 1)


@time_machine.travel(NOW, tick=False)
def test_same_event_id_twice_counts_once(post, drain):
    body = completed("s1", 1, event_id="dup-1")
    assert post(body).status_code == 202
    assert post(body).status_code == 202
    drain()
    assert snapshot().sessions_7d == 1
    from ingest.models import Event

    assert Event.objects.filter(event_id="dup-1").count() == 1


@time_machine.travel(NOW, tick=False)
def test_a_session_counts_once_across_start_completion_and_a_repeat(post, drain):
    start = event(
        "session_started",
        session_id="s1",
        student_id="stu_1",
        tutor_id="tut_1",
        timestamp=(NOW - timedelta(hours=3)).isoformat(),
    )
    post(
        {"events": [start, completed("s1", 0.1), completed("s1", 0.05)]}
    )  # the second completion has another id
    drain()
    snap = snapshot()
    assert snap.sessions_7d == 1 and snap.sessions_started_7d == 1


@time_machine.travel(NOW, tick=False)
def test_late_events_land_in_their_own_window(post, drain):
    post(completed("s-new", 1))
    drain()
    post(completed("s-old", 20))  # arrives after, happened before
    drain()
    snap = snapshot()
    assert (snap.sessions_7d, snap.sessions_30d) == (1, 2)
    assert snap.first_session_id == "s-old"


@time_machine.travel(NOW, tick=False)
def test_tutor_rating_is_mean_of_rated_sessions_only(post, drain):
    post({"events": [completed("a", 1, rating=5), completed("b", 1, rating=3), completed("c", 1)]})
    drain()
    tutor = TutorSnapshot.objects.get(tutor_id="tut_1")
    assert tutor.rated_sessions == 2 and tutor.avg_rating == 4.0 and tutor.sessions_7d == 3


@time_machine.travel(NOW, tick=False)
def test_first_session_failure_is_recorded_and_puts_a_new_student_at_risk(post, drain):
    """Two new students: one day of activity is not enough to judge, except that a failed first
    session is a strong signal on its own."""
    post(event("ib_call_logged", student_id="stu_other", timestamp=(NOW - timedelta(days=40)).isoformat()))
    post(completed("s1", 1, student="stu_bad", ok=False, rating=1))
    post(completed("s2", 1, student="stu_good", rating=5))
    drain()
    bad, good = snapshot("stu_bad"), snapshot("stu_good")
    assert bad.first_session_ok is False and good.first_session_ok is True
    assert bad.health_components["first_session"]["points"] == pytest.approx(35 * 29 / 30, abs=0.05)
    assert good.health_components["first_session"]["points"] == 0
    assert bad.health_score == pytest.approx(100 - 35 * 29 / 30, abs=0.1) and bad.health_score < 70
    assert good.health_score is None  # not enough data yet


@time_machine.travel(NOW, tick=False)
def test_velocity_falls_when_this_week_is_below_the_prior_three_weeks(post, drain):
    history = [completed(f"h{i}", d) for i, d in enumerate([8, 9, 10, 15, 16, 17, 22, 23, 24])]
    post({"events": history + [completed("now", 1)]})
    drain()
    snap = snapshot()
    assert snap.prior_weekly_mean == 3.0 and snap.velocity == pytest.approx(1 / 3, abs=0.01)
    assert snap.velocity_trend == "falling"


@time_machine.travel(NOW, tick=False)
def test_platform_health_is_kept_beside_ours_and_late_reading_does_not_overwrite(post, drain):
    post(event("customer_health_update", student_id="stu_1", health_score=80, timestamp=NOW.isoformat()))
    drain()
    post(
        event(
            "customer_health_update",
            student_id="stu_1",
            health_score=20,
            timestamp=(NOW - timedelta(hours=1)).isoformat(),
        )
    )
    drain()
    assert snapshot().platform_health_score == 80
