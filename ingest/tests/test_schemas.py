"""Field-level schemas of the six event types through POST /api/ingest: a full valid event of each
type, at least three invalid variants each (the 400 names the field), and the bounds on unknown fields."""

from __future__ import annotations

import pytest

from ingest.models import PendingEvent

pytestmark = pytest.mark.django_db

VALID = {
    "session_started": {
        "session_id": "sess_1",
        "student_id": "stu_1",
        "tutor_id": "tut_1",
        "subject": "Physics",
        "session_type": "instant_book",
        "scheduled_duration_minutes": 60,
    },
    "session_completed": {
        "session_id": "sess_1",
        "student_id": "stu_1",
        "tutor_id": "tut_1",
        "subject": "Physics",
        "actual_duration_minutes": 0,
        "student_rating": 1,
        "tutor_rating": 5,
        "completed_successfully": False,
    },
    "ib_call_logged": {
        "student_id": "stu_1",
        "call_id": "call_1",
        "reason": "technical_problem",
        "duration_seconds": 86_400,
        "resolved": True,
        "priority": "low",
    },
    "tutor_availability_updated": {
        "tutor_id": "tut_1",
        "available_hours_this_week": 168,
        "subjects": ["Mathematics", "French"],
        "timezone": "America/New_York",
        "accepts_instant_book": True,
    },
    "customer_health_update": {
        "student_id": "stu_1",
        "health_score": 0,
        "churn_risk": "high",
        "sessions_last_7_days": 0,
        "sessions_last_30_days": 12,
        "ib_calls_last_14_days": 3,
        "avg_session_rating": 4.5,
    },
    "supply_demand_update": {
        "subject": "Chemistry",
        "region": "midwest",
        "available_tutors": 0,
        "active_students": 40,
        "demand_score": 100,
        "supply_score": 12.5,
        "balance_status": "high_demand",
    },
}

# (event_type, change to the valid fields (None removes the field), the field the 400 must name)
INVALID = [
    ("session_started", {"session_id": None}, "session_id"),
    ("session_started", {"session_type": "solo"}, "session_type"),
    ("session_started", {"scheduled_duration_minutes": 4}, "scheduled_duration_minutes"),
    ("session_started", {"scheduled_duration_minutes": 481}, "scheduled_duration_minutes"),
    ("session_started", {"tutor_id": "x" * 65}, "tutor_id"),
    ("session_completed", {"student_id": None}, "student_id"),
    ("session_completed", {"actual_duration_minutes": -1}, "actual_duration_minutes"),
    ("session_completed", {"tutor_rating": 0}, "tutor_rating"),
    ("session_completed", {"student_rating": 4.5}, "student_rating"),
    ("session_completed", {"completed_successfully": "yes"}, "completed_successfully"),
    ("ib_call_logged", {"student_id": None}, "student_id"),
    ("ib_call_logged", {"reason": "angry"}, "reason"),
    ("ib_call_logged", {"duration_seconds": 86_401}, "duration_seconds"),
    ("ib_call_logged", {"priority": "urgent"}, "priority"),
    ("ib_call_logged", {"resolved": 1}, "resolved"),
    ("tutor_availability_updated", {"tutor_id": None}, "tutor_id"),
    ("tutor_availability_updated", {"available_hours_this_week": -0.5}, "available_hours_this_week"),
    ("tutor_availability_updated", {"subjects": ["Math"] * 51}, "subjects"),
    ("tutor_availability_updated", {"subjects": ["Math", 7]}, "subjects.1"),
    ("tutor_availability_updated", {"timezone": "x" * 101}, "timezone"),
    ("customer_health_update", {"student_id": None}, "student_id"),
    ("customer_health_update", {"health_score": -1}, "health_score"),
    ("customer_health_update", {"churn_risk": "extreme"}, "churn_risk"),
    ("customer_health_update", {"sessions_last_7_days": -1}, "sessions_last_7_days"),
    ("customer_health_update", {"avg_session_rating": 0.5}, "avg_session_rating"),
    ("supply_demand_update", {"subject": None}, "subject"),
    ("supply_demand_update", {"region": ""}, "region"),
    ("supply_demand_update", {"supply_score": 100.5}, "supply_score"),
    ("supply_demand_update", {"balance_status": "meh"}, "balance_status"),
    ("supply_demand_update", {"available_tutors": 1.5}, "available_tutors"),
    ("supply_demand_update", {"region": "north\x00east"}, "region"),
]


def _body(event_type: str, change: dict | None = None, *, envelope: bool = False) -> dict:
    fields = dict(VALID[event_type])
    for key, value in (change or {}).items():
        if value is None:
            fields.pop(key, None)
        else:
            fields[key] = value
    if envelope:
        return {"event_type": event_type, "payload": fields}
    return {"event_type": event_type, **fields}


@pytest.mark.parametrize("event_type", sorted(VALID))
@pytest.mark.parametrize("envelope", [False, True], ids=["flat", "envelope"])
def test_every_event_type_is_accepted_with_all_its_fields(post, event_type, envelope):
    resp = post(_body(event_type, envelope=envelope))
    assert resp.status_code == 202, resp.json()
    assert PendingEvent.objects.get().body["payload"] == VALID[event_type]


def test_every_event_type_has_at_least_three_invalid_variants():
    per_type = {t: sum(1 for et, _, _ in INVALID if et == t) for t in VALID}
    assert min(per_type.values()) >= 3, per_type


@pytest.mark.parametrize(("event_type", "change", "field"), INVALID)
@pytest.mark.parametrize("envelope", [False, True], ids=["flat", "envelope"])
def test_invalid_variant_is_400_naming_the_field(post, event_type, change, field, envelope):
    resp = post(_body(event_type, change, envelope=envelope))
    assert resp.status_code == 400
    data = resp.json()
    expected = f"payload.{field}" if envelope else field
    assert expected in {e["field"] for e in data["errors"]}, data
    assert all(e["message"] for e in data["errors"])
    assert PendingEvent.objects.count() == 0


def test_session_completed_aliases_resolve_and_defaults_apply(post):
    resp = post(
        {
            "event_type": "session_completed",
            "session_id": "s",
            "student_id": "a",
            "tutor_id": "b",
            "duration_minutes": 45,
            "rating": 4,
        }
    )
    assert resp.status_code == 202
    payload = PendingEvent.objects.get().body["payload"]
    assert payload["actual_duration_minutes"] == 45 and payload["student_rating"] == 4
    assert payload["completed_successfully"] is True


def test_alias_conflicting_with_its_canonical_field_is_refused(post):
    resp = post(_body("session_completed", {"rating": 2}))  # student_rating is 1
    assert resp.status_code == 400
    assert resp.json()["errors"][0]["field"] == "rating"


def test_ids_are_stripped_and_whitespace_only_ids_refused(post):
    assert post(_body("ib_call_logged", {"student_id": "   "})).status_code == 400
    assert post(_body("ib_call_logged", {"student_id": "  stu_9 "})).status_code == 202
    assert PendingEvent.objects.get().body["payload"]["student_id"] == "stu_9"


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"notes": "x" * 2001}, "notes"),
        ({"tags": list(range(101))}, "tags"),
        ({"meta": {"a": {"b": {"c": {"d": {"e": 1}}}}}}, "meta.a.b.c.d"),
        ({"meta": {"list": ["ok", "y" * 2001]}}, "meta.list[1]"),
        ({"meta": {f"k{i}": i for i in range(51)}}, "meta"),
        ({"k" * 65: 1}, "k" * 64),
        ({"note": "a\x00b"}, "note"),
        ({f"extra_{i}": i for i in range(51)}, "body"),
    ],
    ids=["long-string", "long-array", "deep", "nested-long-string", "wide-object", "long-key", "nul", "many"],
)
def test_unknown_fields_are_bounded(post, extra, field):
    resp = post({**_body("ib_call_logged"), **extra})
    assert resp.status_code == 400
    assert field in {e["field"] for e in resp.json()["errors"]}, resp.json()


def test_unknown_fields_within_bounds_are_kept_as_sent(post):
    extra = {"campaign": {"source": "email", "tags": ["fall", "promo"], "depth": {"ok": {"yes": True}}}}
    assert post({**_body("ib_call_logged"), **extra}).status_code == 202
    assert PendingEvent.objects.get().body["payload"]["campaign"] == extra["campaign"]


@pytest.mark.parametrize(
    "raw", [b'{"event_type": "ib_call_logged", "student_id": "s", "x": NaN}', b"\xff\xfe"]
)
def test_non_json_numbers_and_bytes_are_invalid_json(post, raw):
    resp = post(None, raw=raw)
    assert resp.status_code == 400 and resp.json()["errors"][0]["field"] == "body"
