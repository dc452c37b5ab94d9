"""Idempotency by event_id across the whole path: a resend, a duplicate inside a batch and a stream
redelivery after a consumer died all have the effect of one event."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from conftest import event
from ingest.models import Event, KinesisShard
from metrics.models import StudentSnapshot

pytestmark = pytest.mark.django_db


def test_sending_the_same_event_id_again_has_no_further_effect(post, drain):
    body = event("ib_call_logged", student_id="stu_dup", event_id="dup-1")
    assert post(body).json()["event_ids"] == ["dup-1"]
    assert post(body).json()["event_ids"] == ["dup-1"]  # accepted again…
    resp = post({"events": [body, body]})
    assert resp.status_code == 202 and resp.json()["accepted"] == 2
    drain()
    assert Event.objects.filter(event_id="dup-1").count() == 1  # …and stored once
    assert StudentSnapshot.objects.get(student_id="stu_dup").ib_calls_7d == 1


def test_kinesis_redelivery_after_a_consumer_died_is_processed_once(post, kinesis_stream):
    from ingest.kinesis import KinesisStream
    from ingest.worker import drain
    from pipeline.batch import process_batch

    _client, name = kinesis_stream
    post({"events": [event("ib_call_logged", student_id="stu_k", event_id=f"k-{i}") for i in range(3)]})
    dying = KinesisStream(name)
    got = dying.read(consumer="dying", count=10, block_ms=0)
    process_batch([d.event for d in got], now=timezone.now())  # committed, but the ack never happens
    KinesisShard.objects.filter(stream_name=name).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert drain(max_seconds=20, stream=KinesisStream(name)) == 3  # the next owner gets them again
    assert Event.objects.filter(event_id__startswith="k-").count() == 3
    assert StudentSnapshot.objects.get(student_id="stu_k").ib_calls_7d == 3
