"""Window edges, late and out-of-order events, first sessions, velocity, health components,
balance hysteresis, tutor burnout and our own subject × region ratio."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from conftest import event
from ingest.models import Event
from metrics.models import StudentSnapshot, SubjectRegionSnapshot, TutorSnapshot
from metrics.services import snapshots_refresh_stale

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)


def ts(days_ago: float) -> str:
    return (NOW - timedelta(days=days_ago)).isoformat()


def completed(session_id, days_ago, *, student="stu_1", tutor="tut_1", rating=None, ok=True, **kw):
    fields = dict(session_id=session_id, student_id=student, tutor_id=tutor, timestamp=ts(days_ago), **kw)
    fields["completed_successfully"] = ok
    if rating is not None:
        fields["student_rating"] = rating
    return event("session_completed", **fields)


def student(sid="stu_1") -> StudentSnapshot:
    return StudentSnapshot.objects.get(student_id=sid)


def send(post, drain, *events):
    with time_machine.travel(NOW, tick=False):
        assert post({"events": list(events)}).status_code == 202
        drain()


HOUR = 1 / 24


@pytest.mark.parametrize(
    ("days_ago", "expected"),
    [
        (6, (1, 1, 1)),
        (7, (1, 1, 1)),  # exactly 7 days: the bucket starting at now − 7 days is inside
        (7 + HOUR, (0, 1, 1)),
        (8, (0, 1, 1)),
        (13, (0, 1, 1)),
        (14, (0, 1, 1)),
        (14 + HOUR, (0, 0, 1)),
        (15, (0, 0, 1)),
        (29, (0, 0, 1)),
        (30, (0, 0, 1)),
        (30 + HOUR, (0, 0, 0)),
        (31, (0, 0, 0)),
    ],
)
def test_ib_call_window_boundaries(post, drain, days_ago, expected):
    send(
        post,
        drain,
        event("ib_call_logged", student_id="stu_1", timestamp=ts(days_ago), reason="billing_question"),
    )
    snap = student()
    assert (snap.ib_calls_7d, snap.ib_calls_14d, snap.ib_calls_30d) == expected
    assert snap.ib_reasons_14d == ({"billing_question": 1} if expected[1] else {})


@pytest.mark.parametrize(("days_ago", "expected"), [(7, (1, 1, 1)), (14, (0, 1, 1)), (30, (0, 0, 1))])
def test_session_window_edges_exactly(post, drain, days_ago, expected):
    send(post, drain, completed("s1", days_ago))
    snap = student()
    assert (snap.sessions_7d, snap.sessions_14d, snap.sessions_30d) == expected


def test_event_older_than_retention_is_stored_flagged_and_counts_only_as_history(post, drain):
    send(post, drain, completed("recent", 2, rating=5))
    send(post, drain, completed("ancient", 50, ok=False, rating=1))
    assert Event.objects.get(payload__session_id="ancient").late is True
    assert Event.objects.get(payload__session_id="recent").late is False
    snap = student()
    assert (snap.sessions_7d, snap.sessions_30d) == (1, 1)
    assert snap.avg_rating_given == 5.0  # the 30-day mean ignores the 50-day-old rating
    assert snap.first_session_id == "ancient" and snap.first_session_ok is False


def test_late_earlier_completion_of_the_same_session_wins_and_moves_windows(post, drain):
    send(post, drain, completed("s1", 2, rating=5, event_id="first-arrival"))
    assert student().sessions_7d == 1
    send(post, drain, completed("s1", 10, rating=1, event_id="second-arrival"))  # same session, earlier
    snap = student()
    assert (snap.sessions_7d, snap.sessions_14d, snap.sessions_30d) == (0, 1, 1)
    assert snap.avg_rating_given == 1.0 and snap.rated_sessions_30d == 1
    tutor = TutorSnapshot.objects.get(tutor_id="tut_1")
    assert (tutor.sessions_7d, tutor.sessions_14d, tutor.rated_sessions, tutor.avg_rating) == (0, 1, 1, 1.0)
    send(post, drain, completed("s1", 1, rating=3))  # a later repeat changes nothing
    assert (student().sessions_7d, student().avg_rating_given) == (0, 1.0)


def test_rating_averages_count_rated_sessions_in_the_window_only(post, drain):
    send(post, drain, completed("a", 1, rating=5), completed("b", 20, rating=2), completed("c", 3))
    send(post, drain, completed("d", 40, rating=1))  # outside 30 days
    snap = student()
    assert snap.rated_sessions_30d == 2 and snap.avg_rating_given == 3.5
    tutor = TutorSnapshot.objects.get(tutor_id="tut_1")
    assert tutor.rated_sessions == 2 and tutor.avg_rating == 3.5
    assert tutor.avg_rating_7d == 5.0 and tutor.avg_rating_prior == 2.0


def test_a_late_failed_first_session_replaces_a_successful_one(post, drain):
    # Someone else's call 60 days ago: a month of our own data before these sessions, so they are firsts.
    send(post, drain, event("ib_call_logged", student_id="stu_other", timestamp=ts(60)))
    send(post, drain, completed("good", 3, rating=5))
    assert student().first_session_ok is True
    send(post, drain, completed("bad", 12, rating=2))  # completed, but rated ≤ 2: not a success
    snap = student()
    assert snap.first_session_id == "bad" and snap.first_session_ok is False
    # a failed first session 12 days ago: 35 points, fading over 30 days
    assert snap.health_components["first_session"]["points"] == pytest.approx(35 * (1 - 12 / 30), abs=0.05)


@pytest.mark.parametrize(
    ("this_week", "trend", "velocity"), [(4, "rising", 2.0), (2, "steady", 1.0), (1, "falling", 0.5)]
)
def test_velocity_trend(post, drain, this_week, trend, velocity):
    prior = [completed(f"p{i}", d) for i, d in enumerate([9, 16, 23, 10, 17, 24])]  # 2 a week before
    recent = [completed(f"r{i}", 1 + i * 0.5) for i in range(this_week)]
    send(post, drain, *prior, *recent)
    snap = student()
    assert snap.prior_weekly_mean == 2.0 and snap.velocity == velocity and snap.velocity_trend == trend


def test_health_components_are_stored_with_their_inputs(post, drain):
    send(
        post,
        drain,
        completed("s1", 20, rating=4),
        completed("s2", 10, rating=2),
        event("customer_health_update", student_id="stu_1", health_score=80, timestamp=ts(15)),
        event("customer_health_update", student_id="stu_1", health_score=50, timestamp=ts(0.5)),
        event("ib_call_logged", student_id="stu_1", timestamp=ts(2), resolved=False, priority="high"),
        event("ib_call_logged", student_id="stu_1", timestamp=ts(3), resolved=True, priority="low"),
    )
    snap = student()
    c = {name: part["points"] for name, part in snap.health_components.items()}
    assert snap.platform_health_baseline == 80 and snap.observed_since is not None
    # platform: 30 below its usual 80 → 1.6 × (30 − 6), and 5 below 55 → 5
    assert c["platform"] == pytest.approx(1.6 * 24 + 5, abs=0.05)
    # support: 2 calls this week against 7 × 1/37 usual → 7 × (2 − 0.19 − 1), + 2 unresolved, + 2 high priority
    assert c["support"] == pytest.approx(7 * (2 - 7 / 37 - 1) + 2 + 2, abs=0.05)
    assert c["satisfaction"] == pytest.approx(8 * (3.5 - 3.0), abs=0.05)  # rates sessions 3.0/5
    assert c["engagement"] == 0 and c["recency"] == 0  # under one session a week: no pace to judge by
    assert c["first_session"] == 0
    assert snap.health_score == pytest.approx(100 - sum(c.values()), abs=0.1)
    assert "platform reads 50 (usually 80)" in snap.health_components["platform"]["why"]
    assert snap.health_components["support"]["why"].startswith("2 support calls this week")


def reading(minutes_ago: float, demand: float, supply: float = 50.0, **kw):
    return event(
        "supply_demand_update",
        subject="Physics",
        region="west",
        demand_score=demand,
        supply_score=supply,
        timestamp=(NOW - timedelta(minutes=minutes_ago)).isoformat(),
        **kw,
    )


def cell() -> SubjectRegionSnapshot:
    return SubjectRegionSnapshot.objects.get(subject="Physics", region="west")


# ratios (demand + 1) / 51: 80 → 1.59, 70 → 1.39, 78 → 1.55, 68 → 1.35, 65 → 1.29, 73 → 1.45, 76 → 1.51
WOBBLE = [(80, "high_demand"), (70, "high_demand"), (78, "high_demand"), (68, "high_demand"),
          (65, "balanced"), (73, "balanced"), (76, "high_demand")]  # fmt: skip


def test_balance_hysteresis_does_not_flap_around_the_threshold(post, drain):
    statuses = []
    for i, (demand, _) in enumerate(WOBBLE):
        send(post, drain, reading(100 - i, demand))
        statuses.append(cell().balance_status)
    assert statuses == [s for _, s in WOBBLE]
    assert cell().status_since == NOW - timedelta(minutes=100 - 6)


def test_late_reading_is_replayed_into_place(post, drain):
    in_order = [reading(100 - i, d) for i, (d, _) in enumerate(WOBBLE)]
    send(post, drain, *in_order[:4], *in_order[5:])  # 129 (the exit) is missing: still high_demand
    assert cell().balance_status == "high_demand"
    send(post, drain, in_order[4])  # arrives late: the history becomes exit, stay out, re-enter
    snap = cell()
    assert snap.balance_status == "high_demand" and snap.status_since == NOW - timedelta(minutes=94)
    assert snap.platform_demand_score == 76  # the latest reading still wins


def _fold_states() -> list[tuple]:
    from metrics.models import SupplyDemandReading

    return list(
        SupplyDemandReading.objects.order_by("reported_at").values_list(
            "demand_score", "fold_status", "fold_since", "fold_ratio"
        )
    )


def _rebuilt() -> tuple[list[tuple], tuple]:
    import io

    from django.core.management import call_command

    with time_machine.travel(NOW, tick=False):
        call_command("rebuild_metrics", "--no-progress", stdout=io.StringIO())
    snap = cell()
    return _fold_states(), (snap.balance_status, snap.status_since, snap.demand_supply_ratio)


def test_each_reading_keeps_the_state_after_it_and_late_ones_restate_those_after_them(post, drain):
    """A late reading replays the cell from the reading before it: the readings after it get their
    new state, those before keep theirs, and everything equals a rebuild from the stored events."""
    in_order = [reading(100 - i, d) for i, (d, _) in enumerate(WOBBLE)]
    send(post, drain, *in_order[:4], *in_order[5:])
    assert [s[1] for s in _fold_states()] == ["high_demand"] * 6
    send(post, drain, in_order[4])
    states = _fold_states()
    assert [s[1] for s in states] == [s for _, s in WOBBLE]
    assert states[4][2] == NOW - timedelta(minutes=96) and states[6][2] == NOW - timedelta(minutes=94)
    snap = cell()
    live = (snap.balance_status, snap.status_since, snap.demand_supply_ratio)
    assert _rebuilt() == (states, live)


def test_a_late_reading_that_moves_nothing_rewrites_no_later_reading(post, drain):
    """At a busy rate most readings are late by seconds: one that leaves the hysteresis where it was
    restates no reading after it (no UPDATE of the readings), and the states still equal a rebuild."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    send(post, drain, *[reading(m, 80) for m in (100, 98, 96, 94)])  # high demand from the first
    before = _fold_states()
    with CaptureQueriesContext(connection) as ctx:
        send(post, drain, reading(97, 79))  # late, still high demand: the states after it stay
    rewrites = [q["sql"] for q in ctx.captured_queries if 'UPDATE "metrics_supplydemandreading"' in q["sql"]]
    assert rewrites == []
    states = _fold_states()
    assert [s for s in states if s[0] != 79] == before
    assert _rebuilt()[0] == states
    with CaptureQueriesContext(connection) as ctx:
        send(post, drain, reading(99, 40))  # late and balanced: the readings after it are restated
    assert any('UPDATE "metrics_supplydemandreading"' in q["sql"] for q in ctx.captured_queries)
    assert _rebuilt()[0] == _fold_states()


def _cell_states() -> tuple[dict[str, tuple], list[tuple]]:
    """Every reading's state by event id, and every cell's snapshot as the dashboard shows it."""
    from metrics.models import SupplyDemandReading

    states = {
        eid: rest
        for eid, *rest in SupplyDemandReading.objects.values_list(
            "event_id", "fold_status", "fold_since", "fold_ratio"
        )
    }
    cells = list(
        SubjectRegionSnapshot.objects.order_by("subject", "region").values_list(
            "subject", "region", "balance_status", "status_since", "demand_supply_ratio",
            "platform_demand_score", "reported_at", "report_event_id",
        )
    )  # fmt: skip
    return states, cells


@pytest.mark.parametrize(
    ("demands", "weights"),
    [
        ([40, 64, 66, 70, 74, 76, 79, 90], None),  # across both edges at every reading
        ([80, 84, 90, 70, 60, 30], [30, 30, 30, 5, 4, 1]),  # mostly high demand, now and then out
    ],
)
def test_late_readings_in_any_order_fold_as_a_rebuild_does(post, drain, demands, weights):
    """Two cells' readings around the hysteresis edges, some at the same instant, sent in shuffled
    batches of 1 to 12 so that most arrive late (a late reading steps the cell again around it, or
    replays it when the fold has not settled within a few readings): after each batch every
    reading's state and each snapshot equal a rebuild from the stored events."""
    import random

    rng = random.Random(20)
    events = []
    for i in range(90):
        at = (NOW - timedelta(minutes=300 - i // 3 * 2)).isoformat()  # three readings per instant
        for region in ("west", "east"):
            events.append(
                event(
                    "supply_demand_update",
                    subject="Physics",
                    region=region,
                    demand_score=rng.choices(demands, weights)[0],  # × 1/51 for the ratio
                    supply_score=50.0,
                    timestamp=at,
                )
            )
    send(post, drain, *events[:40])  # in order
    rest = events[40:]
    rng.shuffle(rest)
    while rest:
        size = rng.randint(1, 12)
        batch, rest = rest[:size], rest[size:]
        send(post, drain, *batch)
        live = _cell_states()
        assert _rebuilt() and _cell_states() == live
    assert len(live[0]) == 180


def test_a_late_reading_reads_the_readings_around_it_not_all_since(post, drain):
    """A reading a hundred readings late reads the one before it and a few after it (the fold is
    back on the stored states at once), not every reading since its time."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    send(post, drain, *[reading(200 - i, 80 + i % 3) for i in range(120)])  # high demand throughout
    before = _cell_states()
    with CaptureQueriesContext(connection) as ctx:
        send(post, drain, reading(199.5, 79))  # 119 readings after it
    reads = [
        q["sql"]
        for q in ctx.captured_queries
        if q["sql"].startswith("SELECT") and "supplydemandreading" in q["sql"]
    ]
    assert reads and all("LIMIT" in sql for sql in reads)
    after = _cell_states()
    assert {k: v for k, v in after[0].items() if k in before[0]} == before[0]  # nothing else restated
    assert after[1] == before[1]  # the snapshot still shows the latest reading
    assert _rebuilt() and _cell_states() == after


def test_readings_stored_without_a_state_are_replayed_from_the_start(post, drain):
    """Readings from before the states were kept (fold_status blank): a late reading falls back to
    replaying the whole cell and fills them in."""
    from metrics.models import SupplyDemandReading

    in_order = [reading(100 - i, d) for i, (d, _) in enumerate(WOBBLE)]
    send(post, drain, *in_order[:4], *in_order[5:])
    SupplyDemandReading.objects.update(fold_status="", fold_since=None, fold_ratio=None)
    send(post, drain, in_order[4])
    states = _fold_states()
    assert [s[1] for s in states] == [s for _, s in WOBBLE]
    assert cell().status_since == NOW - timedelta(minutes=94)
    assert _rebuilt()[0] == states


def test_oversupplied_with_hysteresis(post, drain):
    send(post, drain, reading(10, 30, 60))  # 31/61 ≈ 0.51 ≤ 1/1.5
    assert cell().balance_status == "oversupplied"
    send(post, drain, reading(9, 45, 60))  # 46/61 ≈ 0.75 ≤ 1/1.3: stays
    assert cell().balance_status == "oversupplied"
    send(post, drain, reading(8, 50, 60))  # 51/61 ≈ 0.84 > 1/1.3: leaves
    assert cell().balance_status == "balanced"


def availability(tutor, hours, subjects, tz, days_ago=5):
    return event(
        "tutor_availability_updated",
        tutor_id=tutor,
        available_hours_this_week=hours,
        subjects=subjects,
        timezone=tz,
        timestamp=ts(days_ago),
    )


def test_tutor_burnout_from_load_rating_slide_and_volume(post, drain):
    prior = [
        completed(f"p{i}", 10 + i, student=f"stu_p{i}", rating=5, actual_duration_minutes=60)
        for i in range(3)
    ]
    recent = [
        completed(f"r{i}", 1 + i * 0.3, student=f"stu_r{i}", rating=3, actual_duration_minutes=60)
        for i in range(4)
    ]
    send(post, drain, availability("tut_1", 4, ["Physics"], "America/Chicago"), *prior, *recent)
    tutor = TutorSnapshot.objects.get(tutor_id="tut_1")
    assert tutor.utilisation == 1.0 and tutor.region == "midwest"
    c = tutor.burnout_components
    assert c["load"]["score"] == 1.0  # 4 of 4 hours taught
    assert c["rating_slide"]["score"] == 1.0  # 3 this week vs. 5 before: capped at 1
    assert c["volume_surge"]["score"] == 1.0  # 4 this week vs. a usual 1
    assert tutor.burnout_risk == 1.0
    send(
        post,
        drain,
        availability("tut_2", 40, ["Physics"], "America/Chicago"),
        completed("x", 1, tutor="tut_2"),
    )
    calm = TutorSnapshot.objects.get(tutor_id="tut_2")
    assert calm.burnout_risk == 0.0 and calm.burnout_components["rating_slide"]["why"].startswith("too few")


def test_own_subject_region_ratio_from_sessions_and_availability(post, drain):
    events = [
        availability("tut_w1", 10, ["Physics"], "America/Los_Angeles"),
        availability("tut_w0", 0, ["Physics"], "America/Los_Angeles"),  # no hours: not supply
        availability("tut_e1", 10, ["Physics", "English"], "America/New_York"),
        availability("tut_e2", 10, ["Physics"], "America/New_York"),
    ]
    events += [
        completed(f"w{i}", 1, student=f"stu_w{i}", tutor="tut_w1", subject="Physics") for i in range(6)
    ]
    events += [
        completed(f"e{i}", 1, student=f"stu_e{i}", tutor="tut_e1", subject="Physics") for i in range(2)
    ]
    events.append(completed("old", 9, student="stu_old", tutor="tut_w1", subject="Physics"))  # outside 7 days
    send(post, drain, *events)
    with time_machine.travel(NOW, tick=False):
        snapshots_refresh_stale(now=NOW)
    rows = {(r.subject, r.region): r for r in SubjectRegionSnapshot.objects.all()}
    west = rows[("Physics", "west")]
    assert (west.active_students, west.available_tutors, west.sessions_7d, west.available_hours) == (
        6,
        1,
        6,
        10.0,
    )
    norm = 8 / 4  # 8 active students in all pools, 4 (subject, timezone) tutor offers
    assert west.own_ratio == pytest.approx((6 + 1) / (1 * norm + 1), abs=0.001)
    east = rows[("Physics", "northeast")]
    assert rows[("Physics", "southeast")].own_ratio == east.own_ratio  # one Eastern pool
    assert (east.active_students, east.available_tutors) == (2, 2)
    assert east.own_ratio == pytest.approx(3 / (2 * norm + 1), abs=0.001)
    assert rows[("English", "northeast")].active_students == 0
    assert west.balance_status == "balanced" and west.platform_demand_score is None  # no platform reading
