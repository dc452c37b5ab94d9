"""Schema-driven fuzzing of POST /api/ingest (hypothesis, bounded and derandomized for CI): bodies are
valid events of every type, then mutated (fields dropped, replaced by arbitrary JSON, unknown fields
added, flat or payload form, single or batch), plus arbitrary JSON and bytes. The values include what
a database or JSON refuses: NUL, lone surrogates, numbers beyond a double (1e400), timestamps at the
ends of the calendar. Whatever comes in: never a 5xx, every 4xx names a field; and the property of
issue 21: every event answered 202 is stored and processed, without a dead letter — through the
database stream and through Redis."""

from __future__ import annotations

import json
import re
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.models import Event, PendingEvent, StreamDeadLetter
from ingest.schemas import EVENT_ID_RE, EVENT_MODELS
from ingest.tests.test_schemas import VALID

pytestmark = pytest.mark.django_db

FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

EXTREME_TIMESTAMPS = [
    "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00+00:01",
    "9999-12-31T23:59:59.999999+00:00",
    "1999-12-31T23:59:59+00:00",
    "2000-01-01T00:00:00+23:59",
    "2026-01-01T00:00:00\x00Z",
    "2026-01-01T00:00:00\udfffZ",
]
# What PostgreSQL's jsonb or JSON itself refuses: NUL, lone surrogates, ±infinity (sent as ±1e400).
hostile_text = st.text(st.characters(categories=["Cs"]) | st.characters(), min_size=1, max_size=8)
hostile = (
    hostile_text
    | st.sampled_from(["\x00", "a\x00b", "\udfff", "a\ud800b", "\udc00\ud800", *EXTREME_TIMESTAMPS])
    | st.floats(allow_nan=False)
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=80)
    | st.sampled_from(["", " ", "\x00", "2026-01-01T00:00:00Z", "stu_1", "one_on_one", "high", "𝔘nicode"])
    | hostile
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=25,
)


def _mostly(valid, invalid):
    """Nine draws in ten valid, so most bodies get past the envelope and reach the field schemas."""
    return st.integers(0, 9).flatmap(lambda n: invalid if n == 0 else valid)


timestamps = (
    st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2026, 1, 1), timezones=st.timezones())
    | st.datetimes(timezones=st.timezones())  # year 1 to 9999, any offset
).map(lambda d: d.isoformat()) | st.sampled_from(EXTREME_TIMESTAMPS)


def encode(body) -> bytes:
    """JSON as a client sends it: lone surrogates as \\udfff escapes, ±infinity as ±1e400 (Python's
    json would print the non-JSON `Infinity`, which the endpoint refuses as invalid JSON)."""
    return re.sub(r"(?<![\w\"])(-?)Infinity(?![\w\"])", r"\g<1>1e400", json.dumps(body)).encode()


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


@st.composite
def hostile_event(draw) -> dict:
    """A valid event of any type that carries hostile values: in a known field (at most one), in
    unknown fields and their names (at any depth), in the timestamp. Most pass the field schemas, so
    what decides is whether the values can be stored — the property below."""
    event_type = draw(st.sampled_from(sorted(EVENT_MODELS)))
    fields = dict(VALID[event_type])
    if draw(st.booleans()):
        fields[draw(st.sampled_from(sorted(fields)))] = draw(hostile)
    nested = st.recursive(
        hostile | st.text(max_size=10) | st.integers(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=6,
    )
    names = st.text(max_size=10, min_size=1) | hostile_text
    fields.update(draw(st.dictionaries(names, nested, min_size=1, max_size=3)))
    body: dict = {"event_type": event_type}
    if draw(st.booleans()):
        body["timestamp"] = draw(timestamps)
    if draw(st.booleans()):
        body["payload"] = fields
    else:
        body.update({k: v for k, v in fields.items() if k not in body and k not in ("event_id", "payload")})
    return body


hostile_bodies = hostile_event() | st.lists(hostile_event(), min_size=1, max_size=4).map(
    lambda items: {"events": items}
)

bodies = (
    hostile_event()
    | mutated_event()
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
    _check(post(None, raw=encode(body)))


@FUZZ
@given(raw=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_fuzzed_raw_bytes_never_get_a_server_error(post, raw):
    _check(post(None, raw=raw))


def _stored_and_processed(resp) -> None:
    """Everything answered 202 left the stream for the events table, and nothing was dead-lettered."""
    ids = resp.json()["event_ids"] if resp.status_code == 202 else []
    assert PendingEvent.objects.count() == 0
    assert not StreamDeadLetter.objects.exists(), list(StreamDeadLetter.objects.values("error", "raw"))
    assert set(Event.objects.filter(event_id__in=ids).values_list("event_id", flat=True)) == set(ids)


@settings(FUZZ, max_examples=60)
@given(body=bodies | hostile_bodies)
def test_accepted_fuzzed_events_are_processed_without_dead_letters(post, body):
    """No 202 for a body the database or the worker would refuse (issue 21)."""
    from ingest.worker import drain

    resp = post(None, raw=encode(body))
    drain(max_seconds=10)
    _stored_and_processed(resp)


@pytest.fixture
def one_delivery(settings):
    """An event the worker cannot store is dead-lettered at its first failure: the property shows at once."""
    settings.STREAM_MAX_DELIVERIES = 1


@pytest.mark.redis
@settings(FUZZ, max_examples=40)
@given(body=hostile_bodies)
def test_accepted_hostile_events_go_through_redis_and_the_worker(
    post, redis_stream_settings, one_delivery, body
):
    """The same property where the report found the hole: the Redis stream takes anything, and only
    the worker's write to PostgreSQL would refuse it."""
    from ingest.worker import drain

    resp = post(None, raw=encode(body))
    drain(max_seconds=10)
    _stored_and_processed(resp)
