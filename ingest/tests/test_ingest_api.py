"""The ingest contract: status codes, both envelopes, batches, field errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from conftest import event
from ingest.models import PendingEvent

SEED_FLAT = {
    "event_type": "session_completed",
    "student_id": "stu_123",
    "tutor_id": "tut_456",
    "session_id": "ses_789",
    "timestamp": "2025-11-04T21:00:00Z",
    "duration_minutes": 60,
    "subject": "Mathematics",
    "rating": 5,
}
SEED_ENVELOPE = {
    "event_type": "ib_call_logged",
    "payload": {
        "call_id": "call_1",
        "student_id": "stu_123",
        "reason": "billing_question",
        "duration_seconds": 240,
        "resolved": False,
        "priority": "high",
    },
}

pytestmark = pytest.mark.django_db


def test_seed_flat_example_is_accepted_with_aliases_resolved(post):
    resp = post(SEED_FLAT)
    assert resp.status_code == 202
    body = resp.json()
    assert body["accepted"] == 1 and body["event_ids"][0].startswith("evt_")
    stored = PendingEvent.objects.get().body
    assert stored["payload"]["actual_duration_minutes"] == 60
    assert stored["payload"]["student_rating"] == 5
    assert "rating" not in stored["payload"] and "duration_minutes" not in stored["payload"]
    assert stored["timestamp"] == "2025-11-04T21:00:00+00:00"


def test_envelope_form_is_accepted(post):
    resp = post(SEED_ENVELOPE)
    assert resp.status_code == 202
    assert PendingEvent.objects.get().body["payload"]["reason"] == "billing_question"


def test_given_event_id_is_echoed(post):
    resp = post({**SEED_ENVELOPE, "event_id": "my-id:1"})
    assert resp.json()["event_ids"] == ["my-id:1"]


def test_unknown_fields_are_kept(post):
    assert post({**SEED_FLAT, "campaign": "fall"}).status_code == 202
    assert PendingEvent.objects.get().body["payload"]["campaign"] == "fall"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"event_type": "session_started", "student_id": "s", "tutor_id": "t"}, "session_id"),
        ({**SEED_FLAT, "rating": 6}, "student_rating"),
        ({**SEED_FLAT, "rating": "5"}, "student_rating"),
        ({"event_type": "ib_call_logged", "student_id": "s", "reason": "angry"}, "reason"),
        ({"event_type": "customer_health_update", "student_id": "s", "health_score": 101}, "health_score"),
        (
            {"event_type": "tutor_availability_updated", "tutor_id": "t", "available_hours_this_week": 200},
            "available_hours_this_week",
        ),
        ({"event_type": "supply_demand_update", "subject": "Physics"}, "region"),
        ({"event_type": "nope"}, "event_type"),
        ({"student_id": "s"}, "event_type"),
        ({**SEED_FLAT, "event_id": "has space"}, "event_id"),
        ({**SEED_FLAT, "timestamp": "2025-11-04T21:00:00"}, "timestamp"),
        ({**SEED_FLAT, "timestamp": "yesterday"}, "timestamp"),
    ],
)
def test_invalid_events_get_400_naming_the_field(post, body, field):
    resp = post(body)
    assert resp.status_code == 400
    data = resp.json()
    assert data["error"]
    assert any(e["field"].endswith(field) for e in data["errors"]), data
    assert PendingEvent.objects.count() == 0


def test_envelope_errors_name_the_payload_field(post):
    resp = post({"event_type": "ib_call_logged", "payload": {"reason": "billing_question"}})
    assert resp.status_code == 400
    assert {"field": "payload.student_id", "message": "Field required"} in resp.json()["errors"]


def test_timestamp_far_in_future_is_refused(post):
    future = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    resp = post({**SEED_FLAT, "timestamp": future})
    assert resp.status_code == 400 and resp.json()["errors"][0]["field"] == "timestamp"


def test_missing_key_is_401(client):
    resp = client.post("/api/ingest", data=json.dumps(SEED_FLAT), content_type="application/json")
    assert resp.status_code == 401
    assert resp.json()["errors"][0]["field"] == "Authorization"


def test_unknown_key_is_401(post):
    assert post(SEED_FLAT, key="iops_deadbeef_nope").status_code == 401


def test_revoked_key_is_401(post, api_key):
    from ingest.keys import api_key_revoke
    from ingest.models import ApiKey

    api_key_revoke(api_key=ApiKey.objects.get())
    assert post(SEED_FLAT).status_code == 401


def test_x_api_key_header_works(client, api_key):
    resp = client.post(
        "/api/ingest", data=json.dumps(SEED_FLAT), content_type="application/json", HTTP_X_API_KEY=api_key
    )
    assert resp.status_code == 202


def test_not_json_content_type_is_415(post):
    resp = post(None, content_type="text/plain", raw=b"hello")
    assert resp.status_code == 415


def test_invalid_json_is_400(post):
    resp = post(None, raw=b"{not json")
    assert resp.status_code == 400 and resp.json()["errors"][0]["field"] == "body"


def test_get_is_405(client, api_key):
    resp = client.get("/api/ingest", HTTP_AUTHORIZATION=f"Bearer {api_key}")
    assert resp.status_code == 405 and resp["Allow"] == "POST"


def test_body_over_one_mib_is_413(post):
    big = {**SEED_FLAT, "notes": "x" * (1024 * 1024)}
    assert post(big).status_code == 413


def test_batch_validates_items_independently(post):
    good = event("ib_call_logged", student_id="stu_1")
    bad = event("ib_call_logged", reason="billing_question")
    resp = post({"events": [good, bad, SEED_FLAT]})
    assert resp.status_code == 202
    data = resp.json()
    assert data["accepted"] == 2 and data["rejected"] == 1
    assert [r["status"] for r in data["results"]] == ["accepted", "rejected", "accepted"]
    assert data["results"][1]["index"] == 1 and data["results"][1]["errors"][0]["field"] == "student_id"
    assert PendingEvent.objects.count() == 2


def test_batch_with_nothing_valid_is_400(post):
    resp = post({"events": [{"event_type": "x"}, {"event_type": "ib_call_logged"}]})
    assert resp.status_code == 400
    data = resp.json()
    assert data["accepted"] == 0 and data["rejected"] == 2
    assert data["errors"][0]["field"].startswith("events[0].")


@pytest.mark.parametrize("events", [[], [SEED_FLAT] * 501, "nope"])
def test_batch_size_and_shape_are_bounded(post, events):
    resp = post({"events": events})
    assert resp.status_code == 400 and resp.json()["errors"][0]["field"] == "events"


def test_rate_limit_answers_429_with_retry_after(post, settings):
    from ingest.models import ApiKey

    ApiKey.objects.update(rate_limit_per_sec=1)
    settings.INGEST_RATE_LIMIT_BURST = 1
    codes = [post(event("ib_call_logged", student_id="s")).status_code for _ in range(3)]
    assert codes[0] == 202 and 429 in codes[1:]
    resp = post(event("ib_call_logged", student_id="s"))
    assert resp.status_code == 429 and int(resp["Retry-After"]) >= 1


def test_stream_down_answers_503_and_accepts_nothing(post, settings):
    settings.IOPS_STREAM = "redis"
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    resp = post(SEED_FLAT)
    assert resp.status_code == 503 and resp["Retry-After"]
    assert resp.json()["error"] == "stream unavailable"


# Values the stream would carry but the database refuses (jsonb: lone surrogates, \u0000) or that JSON
# cannot carry (1e400 is infinity, stored as null), and dates with no UTC equivalent (issue 21).
def _ib(extra: str) -> str:
    """An ib_call_logged body as raw JSON text, with `extra` members written as they go on the wire."""
    return '{"event_type": "ib_call_logged", "student_id": "stu_1", ' + extra + "}"


UNSTORABLE = [
    (_ib('"note": "a\\udfffb"'), "note"),
    (
        '{"event_type": "ib_call_logged", "payload": {"student_id": "s", "m": {"t": ["\\ud800"]}}}',
        "payload.m.t[0]",
    ),
    (_ib('"note": "a\\u0000b"'), "note"),
    (_ib('"\\udfff": 1'), "\\udfff"),
    (_ib('"score": 1e400'), "score"),
    (_ib('"m": {"x": [-1e999]}'), "m.x[0]"),
    (
        '{"event_type": "customer_health_update", "student_id": "stu_1", "health_score": 1e400}',
        "health_score",
    ),
    (_ib('"timestamp": "9999-12-31T23:59:59-23:59"'), "timestamp"),
    (_ib('"timestamp": "0001-01-01T00:00:00+00:01"'), "timestamp"),
]


@pytest.mark.parametrize(("raw", "field"), UNSTORABLE)
def test_values_the_database_cannot_store_are_400_naming_the_field(post, raw, field):
    resp = post(None, raw=raw.encode())
    assert resp.status_code == 400, resp.json()
    assert field in [e["field"] for e in resp.json()["errors"]], resp.json()
    assert PendingEvent.objects.count() == 0


def test_an_out_of_range_timestamp_rejects_its_item_not_the_batch(post):
    bad = _ib('"timestamp": "9999-12-31T23:59:59-23:59"')
    resp = post(None, raw=('{"events": [' + bad + ", " + _ib('"n": 1') + "]}").encode())
    assert resp.status_code == 202, resp.json()
    data = resp.json()
    assert data["accepted"] == 1 and data["rejected"] == 1
    assert data["results"][0]["errors"] == [{"field": "timestamp", "message": "is out of range"}]


def test_a_key_without_the_ingest_scope_is_403_naming_it(post):
    from ingest.keys import api_key_create

    reader = api_key_create(name="reader", scopes=["read"]).plaintext
    resp = post(SEED_FLAT, key=reader)
    assert resp.status_code == 403
    assert resp.json()["errors"][0] == {
        "field": "Authorization",
        "message": "this API key lacks the ingest scope (admin → API keys)",
    }
    assert PendingEvent.objects.count() == 0


def test_a_slow_key_gets_a_burst_scaled_to_its_rate(post):
    """A key at 10 events/s may send 20 at once (2 s of its rate, as the default burst is of the default
    rate), not the global 10,000; a batch larger than its burst goes through once, then waits its cost."""
    from ingest.models import ApiKey

    ApiKey.objects.update(rate_limit_per_sec=10)
    codes = [
        post({"events": [event("ib_call_logged", student_id="s") for _ in range(100)]}) for _ in range(5)
    ]
    assert [c.status_code for c in codes] == [202, 429, 429, 429, 429]
    assert 5 <= int(codes[1]["Retry-After"]) <= 11
    assert PendingEvent.objects.count() == 100
