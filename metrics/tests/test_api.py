"""The entity read API: documented shapes, filters, keyset pages, history, subject × region rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
import time_machine

from conftest import event

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)


def ts(days_ago: float) -> str:
    return (NOW - timedelta(days=days_ago)).isoformat()


def completed(session_id, days_ago, *, student="stu_1", tutor="tut_1", rating=None, ok=True):
    fields = dict(session_id=session_id, student_id=student, tutor_id=tutor, timestamp=ts(days_ago))
    fields["completed_successfully"] = ok
    fields["subject"] = "Mathematics"
    if rating is not None:
        fields["student_rating"] = rating
    return event("session_completed", **fields)


@pytest.fixture
def auth(api_key):
    return {"HTTP_AUTHORIZATION": f"Bearer {api_key}"}


@pytest.fixture
def population(post, drain):
    """Six students watched for 29 days, their health spread out by this week's IB calls; one tutor with
    availability in the West."""
    events = []
    for i in range(6):
        events.append(completed(f"h{i}", 29, student=f"stu_{i}", rating=5))
        events.append(completed(f"s{i}", 1, student=f"stu_{i}", rating=5))
        events += [
            event("ib_call_logged", student_id=f"stu_{i}", timestamp=ts(1), resolved=True, priority="low")
            for _ in range(i)
        ]
    events.append(
        event(
            "tutor_availability_updated",
            tutor_id="tut_1",
            available_hours_this_week=10,
            subjects=["Mathematics"],
            timezone="America/Los_Angeles",
            timestamp=ts(2),
        )
    )
    events.append(
        event(
            "supply_demand_update",
            subject="Computer Science",
            region="west",
            demand_score=90,
            supply_score=20,
            timestamp=ts(0.5),
        )
    )
    with time_machine.travel(NOW, tick=False):
        post({"events": events})
        drain()


@time_machine.travel(NOW, tick=False)
def test_openapi_documents_the_entity_shapes(client, staff_user):
    client.force_login(staff_user)
    spec = client.get("/api/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for name in ("StudentOut", "TutorOut", "SubjectRegionOut", "StudentPage", "History", "DayPoint"):
        assert name in schemas, name
    assert {"health_score", "platform_health_score", "sessions_7d", "health_components"} <= set(
        schemas["StudentOut"]["properties"]
    )
    assert {"burnout_risk", "burnout_components", "burnout_level"} <= set(schemas["TutorOut"]["properties"])
    assert {"own_ratio", "demand_supply_ratio", "balance_status"} <= set(
        schemas["SubjectRegionOut"]["properties"]
    )
    assert "/api/entities/{entity_type}/{entity_id}/history" in spec["paths"]
    params = {p["name"] for p in spec["paths"]["/api/entities/student"]["get"]["parameters"]}
    assert {"order", "limit", "cursor", "health_below", "trend"} <= params


@time_machine.travel(NOW, tick=False)
def test_students_lowest_health_first_walks_every_page_once(client, auth, population):
    seen, cursor, healths = [], None, []
    while True:
        url = "/api/entities/student?order=health_score&limit=2" + (f"&cursor={cursor}" if cursor else "")
        body = client.get(url, **auth).json()
        seen += [r["entity_id"] for r in body["results"]]
        healths += [r["health_score"] for r in body["results"]]
        cursor = body["next"]
        if cursor is None:
            break
    assert sorted(seen) == [f"stu_{i}" for i in range(6)] and len(seen) == 6
    assert healths == sorted(healths) and seen[0] == "stu_5"  # most support calls, lowest health


@time_machine.travel(NOW, tick=False)
@pytest.mark.parametrize("order", ["health_score", "-health_score"])
def test_students_not_scored_yet_are_listed_after_the_scored_ones(
    client, auth, post, drain, population, order
):
    post(completed("fresh", 0.5, student="stu_new"))  # one session today: not enough data yet
    drain()
    seen, cursor = [], None
    while True:
        url = f"/api/entities/student?order={order}&limit=4" + (f"&cursor={cursor}" if cursor else "")
        body = client.get(url, **auth).json()
        seen += [(r["entity_id"], r["health_score"]) for r in body["results"]]
        cursor = body["next"]
        if cursor is None:
            break
    assert len(seen) == 7 and seen[-1] == ("stu_new", None)
    scored = [h for _, h in seen[:-1]]
    assert scored == sorted(scored, reverse=order.startswith("-"))


@time_machine.travel(NOW, tick=False)
def test_keyset_cursor_survives_rows_changing_between_pages(client, auth, post, drain, population):
    first = client.get("/api/entities/student?order=student_id&limit=3", **auth).json()
    assert [r["entity_id"] for r in first["results"]] == ["stu_0", "stu_1", "stu_2"]
    post(completed("new", 0.1, student="stu_00"))  # sorts before the cursor: an offset would repeat stu_2
    drain()
    second = client.get(
        f"/api/entities/student?order=student_id&limit=3&cursor={first['next']}", **auth
    ).json()
    assert [r["entity_id"] for r in second["results"]] == ["stu_3", "stu_4", "stu_5"]


@time_machine.travel(NOW, tick=False)
def test_student_filters(client, auth, population):
    body = client.get("/api/entities/student?health_below=90&order=-health_score", **auth).json()
    assert body["results"] and all(r["health_score"] < 90 for r in body["results"])
    assert [r["entity_id"] for r in body["results"]] == ["stu_3", "stu_4", "stu_5"]
    new = client.get("/api/entities/student?trend=new", **auth).json()
    assert len(new["results"]) == 6 and all(r["velocity_trend"] == "new" for r in new["results"])
    assert client.get("/api/entities/student?trend=falling", **auth).json()["results"] == []


@time_machine.travel(NOW, tick=False)
def test_bad_list_parameters_are_400_json(client, auth, population):
    resp = client.get("/api/entities/student?order=password", **auth)
    assert resp.status_code == 400 and resp.json()["errors"][0]["field"] == "order"
    resp = client.get("/api/entities/student?cursor=not-a-cursor", **auth)
    assert resp.status_code == 400 and resp.json()["error"] == "invalid cursor"
    resp = client.get("/api/entities/tutor?limit=5000", **auth)
    assert resp.status_code == 400 and resp.json()["errors"][0]["field"] == "limit"
    assert client.get("/api/entities/student").status_code == 401


@time_machine.travel(NOW, tick=False)
def test_history_is_a_daily_series_from_the_buckets(client, auth, post, drain):
    post(
        {"events": [completed("a", 3, rating=4), completed("b", 3, rating=2, ok=False), completed("c", 0.1)]}
    )
    post(event("ib_call_logged", student_id="stu_1", timestamp=ts(3)))
    drain()
    body = client.get("/api/entities/student/stu_1/history?days=7", **auth).json()
    assert body["days"] == 7 and len(body["series"]) == 7
    by_date = {p["date"]: p for p in body["series"]}
    day = by_date[(NOW - timedelta(days=3)).date().isoformat()]
    assert (day["sessions_completed"], day["sessions_unsuccessful"], day["ib_calls"]) == (2, 1, 1)
    assert day["avg_rating"] == 3.0 and day["rated_sessions"] == 2
    assert by_date[NOW.date().isoformat()]["sessions_completed"] == 1
    assert sum(p["sessions_completed"] for p in body["series"]) == 3
    tutor = client.get("/api/entities/tutor/tut_1/history?days=30", **auth).json()
    assert len(tutor["series"]) == 30 and tutor["series"][0]["ib_calls"] is None
    assert client.get("/api/entities/student/nobody/history", **auth).status_code == 404
    assert client.get("/api/entities/student/stu_1/history?days=400", **auth).status_code == 400


@time_machine.travel(NOW, tick=False)
def test_tutor_snapshot_carries_region_and_burnout(client, auth, population):
    tutor = client.get("/api/entities/tutor/tut_1", **auth).json()
    assert tutor["region"] == "west" and tutor["utilisation"] is not None
    assert 0 <= tutor["burnout_risk"] <= 1 and tutor["burnout_level"] in ("low", "medium", "high")
    assert set(tutor["burnout_components"]) == {"load", "rating_slide", "volume_surge"}
    listing = client.get("/api/entities/tutor?order=-burnout_risk&region=west", **auth).json()
    assert [r["entity_id"] for r in listing["results"]] == ["tut_1"]


@time_machine.travel(NOW, tick=False)
def test_subject_region_rows_by_url_quoted_id(client, auth, population):
    key = quote("Computer Science|west", safe="")
    row = client.get(f"/api/entities/subject_region/{key}", **auth).json()
    assert row["entity_id"] == "Computer Science|west" and row["balance_status"] == "high_demand"
    assert row["platform_demand_score"] == 90 and row["demand_supply_ratio"] == pytest.approx(
        91 / 21, abs=0.001
    )
    listing = client.get("/api/entities/subject_region?status=high_demand&order=-demand_supply_ratio", **auth)
    assert [r["entity_id"] for r in listing.json()["results"]] == ["Computer Science|west"]
    missing = client.get(f"/api/entities/subject_region/{quote('Latin|west', safe='')}", **auth)
    assert missing.status_code == 404 and missing.json()["error"] == "not found"
    assert client.get("/api/entities/subject_region/no-separator", **auth).status_code == 404
