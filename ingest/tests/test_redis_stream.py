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
