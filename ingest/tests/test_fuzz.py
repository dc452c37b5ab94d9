"""Schema-driven fuzzing of POST /api/ingest (hypothesis, bounded and derandomized for CI): bodies are
valid events of every type, then mutated (fields dropped, replaced by arbitrary JSON, unknown fields
added, flat or payload form, single or batch), plus arbitrary JSON and bytes. Whatever comes in:
never a 5xx, every 4xx names a field, and every accepted event goes through the pipeline."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.models import PendingEvent, StreamDeadLetter
from ingest.schemas import EVENT_ID_RE, EVENT_MODELS
from ingest.tests.test_schemas import VALID

pytestmark = pytest.mark.django_db

FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=80)
    | st.sampled_from(["", " ", "\x00", "2026-01-01T00:00:00Z", "stu_1", "one_on_one", "high", "𝔘nicode"])
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=25,
)


def _mostly(valid, invalid):
    """Nine draws in ten valid, so most bodies get past the envelope and reach the field schemas."""
    return st.integers(0, 9).flatmap(lambda n: invalid if n == 0 else valid)


timestamps = st.datetimes(
    min_value=datetime(2000, 1, 2), max_value=datetime(2026, 1, 1), timezones=st.timezones()
).map(lambda d: d.isoformat())


@st.composite
def mutated_event(draw) -> dict:
    event_type = draw(st.sampled_from(sorted(EVENT_MODELS)))
    fields = dict(VALID[event_type])
    names = sorted(set(fields) | set(EVENT_MODELS[event_type].model_fields))
    for name in draw(st.lists(st.sampled_from(names), max_size=2, unique=True)):
        if draw(st.booleans()):
            fields.pop(name, None)
        else:
            fields[name] = draw(json_values)
    fields.update(draw(st.dictionaries(st.text(min_size=1, max_size=70), json_values, max_size=3)))
    body: dict = {"event_type": draw(_mostly(st.just(event_type), st.sampled_from(["nope", 7, None, ""])))}
    if draw(st.booleans()):
        body["event_id"] = draw(_mostly(st.from_regex(EVENT_ID_RE, fullmatch=True), json_values))
    if draw(st.booleans()):
        body["timestamp"] = draw(_mostly(timestamps, json_values))
    if draw(st.booleans()):
        body["payload"] = draw(_mostly(st.just(fields), json_values))
    else:
        body.update(
            {k: v for k, v in fields.items() if k not in ("event_type", "event_id", "timestamp", "payload")}
        )
    return body


bodies = (
    mutated_event()
    | st.lists(mutated_event() | json_values, min_size=1, max_size=5).map(lambda items: {"events": items})
    | json_values
)


def _check(resp) -> None:
    assert resp.status_code < 500, resp.content[:500]
    data = resp.json()
    if resp.status_code >= 400:
        assert data["error"] and data["errors"], data
        assert all(isinstance(e["field"], str) and e["field"] and e["message"] for e in data["errors"]), data
    if "results" in data:
        for result in data["results"]:
            if result["status"] == "rejected":
                assert all(e["field"] and e["message"] for e in result["errors"]), result


@FUZZ
@given(body=bodies)
def test_fuzzed_bodies_never_get_a_server_error_and_errors_name_a_field(post, body):
    _check(post(body))


@FUZZ
@given(raw=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_fuzzed_raw_bytes_never_get_a_server_error(post, raw):
    _check(post(None, raw=raw))


@settings(FUZZ, max_examples=60)
@given(body=bodies)
def test_accepted_fuzzed_events_are_processed_without_dead_letters(post, body):
    from ingest.worker import drain

    post(body)
    drain(max_seconds=10)
    assert PendingEvent.objects.count() == 0
    assert StreamDeadLetter.objects.count() == 0
