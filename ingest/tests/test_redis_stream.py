"""The redis backend against the real Redis on 127.0.0.1:6379: consumer group, ack after commit,
redelivery of what a dead consumer left pending, malformed messages to the dead-letter stream."""

from __future__ import annotations

import json

import pytest
import redis

from conftest import event
from ingest.models import Event, StreamDeadLetter
from ingest.streams import RedisStream, get_stream
from ingest.worker import StreamWorker
from metrics.models import StudentSnapshot

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]


def test_ingest_to_snapshot_through_redis(post, drain, redis_stream_settings):
    assert get_stream().name == "redis"
    resp = post({"events": [event("ib_call_logged", student_id="stu_r") for _ in range(3)]})
    assert resp.status_code == 202
    assert drain() == 3
    assert StudentSnapshot.objects.get(student_id="stu_r").ib_calls_7d == 3
    info = redis.Redis.from_url("redis://127.0.0.1:6379/0").xinfo_groups(redis_stream_settings)[0]
    assert info["pending"] == 0  # acked after commit


def test_entries_left_pending_by_a_dead_consumer_are_reclaimed(settings, redis_stream_settings):
    settings.STREAM_CLAIM_IDLE_MS = 100
    stream = get_stream()
    stream.publish(
        [
            {
                "event_id": "e1",
                "event_type": "ib_call_logged",
                "timestamp": "2026-01-01T00:00:00+00:00",
                "received_at": "2026-01-01T00:00:00+00:00",
                "payload": {"student_id": "stu_z"},
            }
        ]
    )
    taken = stream.read(consumer="doomed", count=10, block_ms=10)  # read, never acked: the consumer "dies"
    assert [d.event["event_id"] for d in taken] == ["e1"]
    assert stream.read(consumer="other", count=10, block_ms=10) == []  # not yet idle long enough
    import time

    time.sleep(0.15)
    again = stream.read(consumer="other", count=10, block_ms=10)
    assert [d.event["event_id"] for d in again] == ["e1"] and again[0].deliveries == 2
    stream.ack(again)
    assert stream.backlog() == {"waiting": 0, "in_flight": 0}


def test_malformed_message_goes_to_dead_letters_and_does_not_block(post, redis_stream_settings):
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    stream: RedisStream = get_stream()
    stream.read(consumer="init", count=1, block_ms=1)  # creates the group
    client.xadd(redis_stream_settings, {"e": b"{not json"})
    client.xadd(redis_stream_settings, {"other": b"x"})
    post(event("ib_call_logged", student_id="stu_ok", event_id="good-1"))
    worker = StreamWorker(block_ms=10)
    while worker.run_once():
        pass
    assert Event.objects.filter(event_id="good-1").exists()
    assert StreamDeadLetter.objects.filter(backend="redis").count() == 2
    dead = client.xrange(f"{redis_stream_settings}:dead")
    assert len(dead) == 2 and b"malformed" in dead[0][1][b"error"]
    assert json.loads(json.dumps(stream.backlog())) == {"waiting": 0, "in_flight": 0}


def _unstorable_event(event_id: str) -> dict:
    """An event as a client could have sent it before issue 21: it passed validation, PostgreSQL's
    jsonb refuses it (a lone surrogate in an unknown field)."""
    return {
        "event_id": event_id,
        "event_type": "ib_call_logged",
        "timestamp": "2026-01-01T00:00:00+00:00",
        "received_at": "2026-01-01T00:00:00+00:00",
        "payload": {"student_id": "stu_s", "note": "a\udfffb"},
    }


@pytest.mark.postgres
def test_an_event_the_database_refuses_is_dead_lettered_with_a_row_then_acked(
    settings, redis_stream_settings
):
    settings.STREAM_MAX_DELIVERIES = 1
    stream = get_stream()
    stream.publish([_unstorable_event("bad-1")])
    worker = StreamWorker(block_ms=10)
    assert worker.run_once() == 1
    letter = StreamDeadLetter.objects.get(backend="redis")
    assert letter.body is None and "\\udfff" in letter.raw and "bad-1" in letter.raw
    assert "surrogate" in letter.error
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    assert client.xpending(redis_stream_settings, settings.IOPS_STREAM_GROUP)["pending"] == 0
    assert len(client.xrange(f"{redis_stream_settings}:dead")) == 1


def test_a_dead_letter_that_cannot_be_written_is_not_acked(settings, redis_stream_settings, monkeypatch):
    from django.db import OperationalError, connection

    settings.STREAM_CLAIM_IDLE_MS = 100
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    stream = get_stream()
    stream.read(consumer="init", count=1, block_ms=1)  # creates the group
    client.xadd(redis_stream_settings, {"e": b"{not json"})
    worker = StreamWorker(block_ms=10)
    connection.close()
    with monkeypatch.context() as down:  # the database goes away between the read and the dead letter
        if connection.vendor == "sqlite":
            down.setitem(connection.settings_dict, "NAME", "/nonexistent-dir/iops.sqlite3")
        else:
            down.setitem(connection.settings_dict, "PORT", "1")
        with pytest.raises(OperationalError):
            worker.run_once()
        connection.close()
    assert client.xpending(redis_stream_settings, settings.IOPS_STREAM_GROUP)["pending"] == 1
    assert client.xrange(f"{redis_stream_settings}:dead") == []
    import time

    time.sleep(0.15)  # the entry is claimed again once idle
    assert worker.run_once() == 1
    assert StreamDeadLetter.objects.filter(backend="redis", error__startswith="malformed").count() == 1
    assert client.xpending(redis_stream_settings, settings.IOPS_STREAM_GROUP)["pending"] == 0


def test_the_rate_limit_is_shared_by_every_web_process_through_redis(post, redis_stream_settings):
    """With REDIS_URL the bucket lives in Redis: a second web process (fresh process memory, here the
    same process with its buckets forgotten) sees what the first one took."""
    from ingest.models import ApiKey
    from ingest.ratelimit import buckets, shared_buckets

    ApiKey.objects.update(rate_limit_per_sec=10)
    assert post({"events": [event("ib_call_logged", student_id="s") for _ in range(20)]}).status_code == 202
    assert post(event("ib_call_logged", student_id="s")).status_code == 429
    buckets.reset()
    shared_buckets.cache_clear()
    resp = post(event("ib_call_logged", student_id="s"))
    assert resp.status_code == 429 and int(resp["Retry-After"]) >= 1
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    assert client.keys(f"{redis_stream_settings}:ratelimit:*")  # and removed with the stream key's test
    client.delete(*client.keys(f"{redis_stream_settings}:ratelimit:*"))
