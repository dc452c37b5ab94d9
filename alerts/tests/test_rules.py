"""Every rule at its threshold boundaries, through the public path: POST /api/ingest → drain → Alert rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from alerts.models import Alert
from conftest import event, watched_student

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)


def ago(**delta) -> str:
    return (NOW - timedelta(**delta)).isoformat()


def send(post, drain, *events, at=NOW):
    with time_machine.travel(at, tick=False):
        assert post({"events": list(events)}).status_code == 202
        drain()


def completed(
    session_id, *, days_ago=1.0, student="stu_1", tutor="tut_1", ok=True, rating=None, minutes=None
):
    fields = {
        "session_id": session_id,
        "student_id": student,
        "tutor_id": tutor,
        "timestamp": ago(days=days_ago),
        "completed_successfully": ok,
    }
    if rating is not None:
        fields["student_rating"] = rating
    if minutes is not None:
        fields["actual_duration_minutes"] = minutes
    return event("session_completed", **fields)


def alerts(type_: str) -> dict[str, str]:
    return dict(Alert.objects.filter(type=type_).values_list("entity_id", "severity"))


# --- high IB-call frequency ----------------------------------------------------------------------


@pytest.mark.parametrize(("calls", "expected"), [(2, None), (3, "warning"), (5, "warning")])
def test_ib_calls_in_14_days_at_threshold(post, drain, calls, expected):
    send(
        post,
        drain,
        *[event("ib_call_logged", student_id="stu_1", timestamp=ago(days=i)) for i in range(calls)],
    )
    assert alerts("high_ib_call_frequency").get("stu_1") == expected


def test_ib_calls_older_than_14_days_do_not_count(post, drain):
    old = [event("ib_call_logged", student_id="stu_1", timestamp=ago(days=15 + i)) for i in range(3)]
    send(post, drain, *old, event("ib_call_logged", student_id="stu_1", timestamp=ago(days=1)))
    assert alerts("high_ib_call_frequency") == {}


# --- first session failed ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ok", "rating", "expected"),
    [
        (False, None, "warning"),
        (True, 1, "warning"),
        (True, 2, "warning"),
        (True, 3, None),
        (True, None, None),
    ],
)
def test_first_session_unsuccessful_or_rated_two_or_less(post, drain, ok, rating, expected):
    send(post, drain, watching_since(), completed("s1", ok=ok, rating=rating))
    assert alerts("first_session_failed").get("stu_1") == expected


def watching_since(days: int = 35) -> dict:
    """Someone else's event from `days` ago: IOps has watched the marketplace that long, so a session
    now of a student never seen in those weeks is known to be their first."""
    return event("ib_call_logged", student_id="stu_elsewhere", timestamp=ago(days=days))


def test_without_a_month_of_our_own_data_a_first_seen_session_is_not_known_to_be_a_first(post, drain):
    """A fresh install sees every established student's next session first: not a first-session failure."""
    send(post, drain, completed("s1", ok=False))
    assert alerts("first_session_failed") == {}


def test_a_failed_first_session_from_weeks_ago_is_not_news(post, drain):
    """A backfill bringing a first session that failed three weeks ago raises nothing now."""
    send(post, drain, watching_since(60), completed("s1", days_ago=21, ok=False))
    assert alerts("first_session_failed") == {}


def test_a_later_bad_session_is_not_a_first_session_failure(post, drain):
    send(
        post,
        drain,
        watching_since(),
        completed("s1", days_ago=3, rating=5),
        completed("s2", days_ago=1, ok=False),
    )
    assert alerts("first_session_failed") == {}


def test_first_session_failed_is_raised_once_per_student(client, staff_user, post, drain):
    send(post, drain, watching_since(), completed("s1", ok=False))
    alert = Alert.objects.get(type="first_session_failed")
    send(post, drain, completed("s2", days_ago=0.5))
    alert.refresh_from_db()
    assert alert.occurrences == 1 and alert.clear_since is None
    client.force_login(staff_user)
    assert client.post(f"/api/alerts/{alert.pk}/resolve").status_code == 200
    send(post, drain, completed("s3", days_ago=0.2), at=NOW + timedelta(days=2))
    assert Alert.objects.filter(type="first_session_failed").count() == 1


# --- velocity drop -------------------------------------------------------------------------------


def history(prior_sessions: int, this_week: int) -> list[dict]:
    """`prior_sessions` spread over days 8–27 and `this_week` within the last 7 days."""
    events = [
        completed(f"p{i}", days_ago=8 + (i * 19 / max(prior_sessions, 1))) for i in range(prior_sessions)
    ]
    events += [completed(f"w{i}", days_ago=1 + i * 0.5) for i in range(this_week)]
    return events


@pytest.mark.parametrize(
    ("prior_sessions", "this_week", "expected"),
    [
        (15, 0, "warning"),  # 5 a week, none this week: 0.7 % by chance
        (12, 0, None),  # 4 a week, none this week: 1.8 % by chance, a quiet week
        (3, 0, None),  # 1 a week: a week without one is common (37 %)
        (2, 0, None),  # prior mean 0.67/week: too little history to call a drop
        (21, 1, "warning"),  # 7 a week, one this week (velocity 0.14, 0.7 % by chance)
        (12, 2, None),  # velocity exactly 0.5
        (6, 3, None),
    ],
)
def test_velocity_below_half_of_prior_weekly_mean(post, drain, prior_sessions, this_week, expected):
    send(post, drain, *history(prior_sessions, this_week), live())
    assert alerts("velocity_drop").get("stu_1") == expected


def live(student: str = "stu_1") -> dict:
    """A current event of the student's (a fine health reading): the batch is live traffic, not history."""
    return event("customer_health_update", student_id=student, health_score=90, timestamp=NOW.isoformat())


def test_history_arriving_late_is_not_judged_on_velocity_until_the_clock_does(post, drain):
    """A backfill sends the prior weeks first: judged then, every student would look collapsed until
    the current week arrives. Late history leaves velocity to the clock (the stale refresh), which
    judges the settled data: no alert for a student whose current week then arrives, an alert for one
    who really stopped."""
    from pipeline.tasks import refresh_stale

    older = [completed(f"p{i}{s}", days_ago=8 + i, student=s) for i in range(18) for s in ("stu_1", "stu_2")]
    send(post, drain, *older)
    assert alerts("velocity_drop") == {}  # history only: not judged
    send(post, drain, *[completed(f"w{i}", days_ago=1 + i, student="stu_1") for i in range(5)])
    assert alerts("velocity_drop") == {}  # stu_1's current week arrived: steady
    with time_machine.travel(NOW + timedelta(hours=2), tick=False):
        refresh_stale.apply()
    assert alerts("velocity_drop") == {"stu_2": "warning"}  # stu_2 really stopped


def test_a_student_who_stops_booking_raises_velocity_drop_without_any_new_event(
    post, drain, make_channel, django_capture_on_commit_callbacks
):
    """Time alone collapses the velocity: the periodic stale refresh (beat `alerts.refresh_stale`)
    re-runs the rules for snapshots it refreshed, and the new alert is routed like any other."""
    from alerts.models import AlertDelivery
    from pipeline.tasks import refresh_stale

    channel = make_channel("email", min_severity="warning")
    days = [0.5 + d * 0.8 for d in range(25)]  # every 0.8 days for 20 days: ~8.75 a week
    send(post, drain, *[completed(f"s{i}", days_ago=d) for i, d in enumerate(days)])
    assert alerts("velocity_drop") == {}  # a steady pace

    with (
        time_machine.travel(NOW + timedelta(days=8), tick=False),
        django_capture_on_commit_callbacks(execute=True),
    ):
        result = refresh_stale.apply().get()
    assert result["refreshed"] == 2 and result["created"] >= 1  # the student and the tutor
    alert = Alert.objects.get(type="velocity_drop")
    assert (alert.entity_id, alert.severity, alert.occurrences) == ("stu_1", "warning", 1)
    assert alert.details["sessions_7d"] == 0 and alert.details["prior_weekly_mean"] >= 5
    deliveries = AlertDelivery.objects.filter(alert__type="velocity_drop").values_list(
        "alert_id", "channel_id"
    )
    assert list(deliveries) == [(alert.pk, channel.pk)]


def test_velocity_drop_details(post, drain):
    send(post, drain, *history(21, 1), live())
    details = Alert.objects.get(type="velocity_drop").details
    assert details["sessions_7d"] == 1 and details["prior_weekly_mean"] == pytest.approx(7, abs=0.01)
    assert details["velocity"] == pytest.approx(1 / 7, abs=0.01)
    assert details["chance"] == pytest.approx(8 * 2.718281828**-7, abs=0.0005)  # P(X <= 1 | 7)


# --- tutor overload ------------------------------------------------------------------------------


def availability(hours: float, tutor="tut_1") -> dict:
    return event(
        "tutor_availability_updated",
        tutor_id=tutor,
        available_hours_this_week=hours,
        subjects=["Mathematics"],
        timezone="America/New_York",
        timestamp=ago(days=2),
    )


@pytest.mark.parametrize(("minutes", "expected"), [(270, None), (271, "warning")])
def test_tutor_utilisation_above_ninety_percent(post, drain, minutes, expected):
    # 10 hours offered; 270 + 270 minutes taught = exactly 90%, 270 + 271 just above.
    send(post, drain, availability(10))
    send(post, drain, completed("s1", days_ago=2, minutes=270), completed("s2", days_ago=1, minutes=minutes))
    assert alerts("tutor_overload").get("tut_1") == expected


@pytest.mark.parametrize(
    ("ratings", "expected"),
    [
        ([3, 3, 4, 3, 4], "warning"),  # mean 3.4 over 5 rated sessions
        ([3, 4, 4, 3, 4], None),  # mean 3.6
        ([3, 3, 3, 3], None),  # mean 3.0 but only 4 rated sessions
        ([1, 1, 1, 1, 1, 5], "warning"),
    ],
)
def test_tutor_rating_below_threshold_with_enough_ratings(post, drain, ratings, expected):
    send(
        post,
        drain,
        *[completed(f"s{i}", student=f"stu_{i}", days_ago=1 + i, rating=r) for i, r in enumerate(ratings)],
    )
    assert alerts("tutor_overload").get("tut_1") == expected


# --- supply–demand imbalance ---------------------------------------------------------------------


def reading(
    demand, supply, *, minutes_ago=1, tutors=None, students=None, subject="Mathematics", region="west"
):
    fields = {"subject": subject, "region": region, "demand_score": demand, "supply_score": supply}
    if tutors is not None:
        fields["available_tutors"] = tutors
    if students is not None:
        fields["active_students"] = students
    return event("supply_demand_update", timestamp=ago(minutes=minutes_ago), **fields)


@pytest.mark.parametrize(
    ("demand", "supply", "minutes_ago", "expected"),
    [
        (58, 39, 1, None),  # ratio 59/40 = 1.475: balanced
        (59, 39, 1, "info"),  # ratio 1.5: high demand
        (59, 39, 59, "info"),
        (59, 39, 60, "warning"),  # high demand for ALERT_IMBALANCE_SUSTAINED_MINUTES
        (88, 29, 1, "info"),  # ratio 2.97
        (89, 29, 1, "critical"),  # ratio 3.0: severe shortage
    ],
)
def test_supply_demand_imbalance_levels(post, drain, demand, supply, minutes_ago, expected):
    send(post, drain, reading(demand, supply, minutes_ago=minutes_ago))
    assert alerts("supply_demand_imbalance").get("Mathematics|west") == expected


@pytest.mark.parametrize(("students", "expected"), [(4, "critical"), (0, "info")])
def test_no_available_tutors_while_students_wait_is_critical(post, drain, students, expected):
    send(post, drain, reading(60, 30, tutors=0, students=students))
    assert alerts("supply_demand_imbalance") == {"Mathematics|west": expected}


def test_imbalance_threshold_is_a_setting(post, drain, settings):
    settings.ALERT_IMBALANCE_SUSTAINED_MINUTES = 5
    send(post, drain, reading(59, 39, minutes_ago=5))
    assert alerts("supply_demand_imbalance") == {"Mathematics|west": "warning"}


def test_oversupply_raises_nothing(post, drain):
    send(post, drain, reading(10, 90))
    assert not Alert.objects.exists()


def test_rules_evaluate_every_touched_entity_in_one_batch(post, drain):
    with time_machine.travel(NOW, tick=False):
        for i in range(20):
            watched_student(post, drain, f"stu_{i}")
    send(
        post,
        drain,
        *[
            event("customer_health_update", student_id=f"stu_{i}", health_score=round(40 + i * 0.7, 1))
            for i in range(20)
        ],
        reading(89, 29),
        reading(59, 39, region="east"),
        availability(1, tutor="tut_9"),
        completed("s9", tutor="tut_9", student="stu_x", minutes=120),
    )
    low = alerts("low_health_score")
    assert len(low) == 20 and low["stu_0"] == "critical" and low["stu_19"] == "warning"
    assert alerts("supply_demand_imbalance") == {"Mathematics|west": "critical", "Mathematics|east": "info"}
    assert alerts("tutor_overload") == {"tut_9": "warning"}
