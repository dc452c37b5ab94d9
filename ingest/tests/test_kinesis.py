"""The kinesis backend against moto in server mode (every call is a real HTTP round trip):
publish through POST /api/ingest and consume with the worker, partition by entity, partial failures,
per-shard checkpoints that survive a restart, lease takeover, dead letters."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from conftest import event
from ingest.kinesis import KinesisStream
from ingest.models import Event, KinesisShard, StreamDeadLetter
from ingest.streams import get_stream
from ingest.worker import StreamWorker
from ingest.worker import drain as worker_drain

pytestmark = pytest.mark.django_db


def _shard_records(client, name) -> dict[str, list[dict]]:
    """Everything on each shard, read straight from Kinesis."""
    out = {}
    for shard in client.list_shards(StreamName=name)["Shards"]:
        it = client.get_shard_iterator(
            StreamName=name, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        out[shard["ShardId"]] = [
            json.loads(r["Data"]) for r in client.get_records(ShardIterator=it)["Records"]
        ]
    return out


def _flaky(monkeypatch, stream: KinesisStream, *, fail_keys: set[str], failing_calls: int | None):
    """Make Kinesis refuse the records of some partition keys (the first `failing_calls` calls, or
    always); the other records really go to moto. Returns the list of record counts per call."""
    real = stream.client.put_records
    calls: list[int] = []

    def put_records(*, StreamName, Records):  # noqa: N803 - boto3's parameter names
        calls.append(len(Records))
        failing = failing_calls is None or len(calls) <= failing_calls
        passed = [r for r in Records if not (failing and r["PartitionKey"] in fail_keys)]
        got = iter(real(StreamName=StreamName, Records=passed)["Records"] if passed else [])
        results = [
            {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded"}
            if failing and r["PartitionKey"] in fail_keys
            else next(got)
            for r in Records
        ]
        return {"FailedRecordCount": sum(1 for r in results if "ErrorCode" in r), "Records": results}

    monkeypatch.setattr(stream.client, "put_records", put_records)
    return calls


def test_ingest_to_events_through_kinesis_keeps_an_entity_on_one_shard(post, kinesis_stream):
    client, name = kinesis_stream
    assert get_stream().name == "kinesis"
    batch = [event("ib_call_logged", student_id=f"stu_{i % 4}", event_id=f"k-{i}") for i in range(20)]
    resp = post({"events": batch})
    assert resp.status_code == 202 and resp.json()["accepted"] == 20

    on_shard = _shard_records(client, name)
    for student in ("stu_0", "stu_1", "stu_2", "stu_3"):
        shards = [
            s
            for s, records in on_shard.items()
            if any(r["payload"]["student_id"] == student for r in records)
        ]
        assert len(shards) == 1, student
        ids = [r["event_id"] for r in on_shard[shards[0]] if r["payload"]["student_id"] == student]
        assert ids == [e["event_id"] for e in batch if e["student_id"] == student]  # in order

    assert worker_drain(max_seconds=20) == 20
    assert Event.objects.count() == 20
    rows = KinesisShard.objects.filter(stream_name=name)
    assert rows.count() == 2
    assert all(r.checkpoint for r in rows if on_shard[r.shard_id])


def test_publish_splits_into_put_records_of_at_most_500(kinesis_stream, monkeypatch):
    stream = get_stream()
    calls = _flaky(monkeypatch, stream, fail_keys=set(), failing_calls=0)
    events = [
        {
            "event_id": f"e{i}",
            "event_type": "ib_call_logged",
            "timestamp": "2026-01-01T00:00:00+00:00",
            "received_at": "2026-01-01T00:00:00+00:00",
            "payload": {"student_id": f"stu_{i}"},
        }
        for i in range(1100)
    ]
    assert stream.publish(events) == []
    assert calls == [500, 500, 100]


def test_refused_records_are_retried_alone_then_accepted(post, kinesis_stream, monkeypatch):
    calls = _flaky(monkeypatch, get_stream(), fail_keys={"stu_flaky"}, failing_calls=1)
    batch = [event("ib_call_logged", student_id=s) for s in ("stu_a", "stu_flaky", "stu_b", "stu_flaky")]
    resp = post({"events": batch})
    assert resp.status_code == 202
    assert resp.json()["accepted"] == 4
    assert calls == [4, 2]  # the retry carried only the two refused records
    assert worker_drain(max_seconds=20) == 4


def test_records_refused_after_all_attempts_are_rejected_with_a_stream_error(
    post, kinesis_stream, monkeypatch, settings
):
    settings.KINESIS_PUT_ATTEMPTS = 3
    calls = _flaky(monkeypatch, get_stream(), fail_keys={"stu_flaky"}, failing_calls=None)
    batch = [event("ib_call_logged", student_id=s) for s in ("stu_a", "stu_flaky", "stu_b")]
    resp = post({"events": batch})
    assert resp.status_code == 202
    data = resp.json()
    assert data["accepted"] == 2 and data["rejected"] == 1
    assert [r["status"] for r in data["results"]] == ["accepted", "rejected", "accepted"]
    assert data["results"][1]["errors"][0]["field"] == "stream"
    assert batch[1]["event_id"] not in data["event_ids"]
    assert calls == [3, 1, 1]  # bounded: three attempts, retries only the refused record
    assert worker_drain(max_seconds=20) == 2


def test_batch_the_stream_refuses_entirely_is_503_with_retry_after(post, kinesis_stream, monkeypatch):
    _flaky(monkeypatch, get_stream(), fail_keys={"stu_x"}, failing_calls=None)
    resp = post({"events": [event("ib_call_logged", student_id="stu_x"), {"event_type": "nope"}]})
    assert resp.status_code == 503 and int(resp["Retry-After"]) >= 1
    data = resp.json()
    assert data["accepted"] == 0 and data["rejected"] == 2
    assert {e["field"] for e in data["errors"]} == {"events[0].stream", "events[1].event_type"}


def test_single_event_the_stream_refuses_is_503(post, kinesis_stream, monkeypatch):
    _flaky(monkeypatch, get_stream(), fail_keys={"stu_x"}, failing_calls=None)
    resp = post(event("ib_call_logged", student_id="stu_x"))
    assert resp.status_code == 503 and resp["Retry-After"]
    assert resp.json()["errors"][0]["field"] == "stream"


def test_unreachable_kinesis_is_503(post, kinesis_stream, settings):
    settings.AWS_ENDPOINT_URL = "http://127.0.0.1:1"  # nothing listens there
    get_stream.cache_clear()
    resp = post(event("ib_call_logged", student_id="stu_x"))
    assert resp.status_code == 503 and resp.json()["error"] == "stream unavailable"


def test_a_new_consumer_resumes_after_the_checkpoint(post, kinesis_stream):
    _client, name = kinesis_stream
    post({"events": [event("ib_call_logged", student_id=f"stu_{i}") for i in range(6)]})
    assert worker_drain(max_seconds=20) == 6
    post({"events": [event("ib_call_logged", student_id=f"stu_{i}") for i in range(3)]})
    # A restarted process: fresh stream object, no memory of what it read; the lease it held expired.
    KinesisShard.objects.filter(stream_name=name).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    fresh = KinesisStream(name)
    assert worker_drain(max_seconds=20, stream=fresh) == 3
    assert Event.objects.count() == 9
    assert fresh.read(consumer="again", count=100, block_ms=0) == []


def test_unacked_records_are_read_again_with_a_delivery_count(kinesis_stream):
    stream = get_stream()
    stream.publish([_raw("e1", "stu_1")])
    first = stream.read(consumer="c1", count=10, block_ms=0)
    assert [d.event["event_id"] for d in first] == ["e1"] and first[0].deliveries == 1
    again = stream.read(consumer="c1", count=10, block_ms=0)  # the batch failed: nothing was acked
    assert [d.event["event_id"] for d in again] == ["e1"] and again[0].deliveries == 2
    stream.ack(again)
    assert stream.read(consumer="c1", count=10, block_ms=0) == []


def test_one_owner_per_shard_and_takeover_after_the_lease_expires(kinesis_stream, settings):
    _client, name = kinesis_stream
    settings.KINESIS_LEASE_SECONDS = 30
    a, b = KinesisStream(name), KinesisStream(name)
    a.publish([_raw(f"e{i}", f"stu_{i}") for i in range(8)])
    got_a = a.read(consumer="worker-a", count=100, block_ms=0)
    assert len(got_a) == 8
    assert set(KinesisShard.objects.filter(stream_name=name).values_list("lease_owner", flat=True)) == {
        "worker-a"
    }
    assert b.read(consumer="worker-b", count=100, block_ms=0) == []  # both shards are leased to a

    a.ack(got_a[:1])  # a commits one record, then dies
    with time_machine.travel(timezone.now() + timedelta(seconds=31), tick=False):
        got_b = b.read(consumer="worker-b", count=100, block_ms=0)
        assert sorted(d.event["event_id"] for d in got_b) == sorted(d.event["event_id"] for d in got_a[1:])
        assert set(KinesisShard.objects.filter(stream_name=name).values_list("lease_owner", flat=True)) == {
            "worker-b"
        }
        a.ack(got_a[1:])  # a wakes up late: its acks no longer move b's checkpoints
        before = dict(KinesisShard.objects.filter(stream_name=name).values_list("shard_id", "checkpoint"))
        b.ack(got_b)
        after = dict(KinesisShard.objects.filter(stream_name=name).values_list("shard_id", "checkpoint"))
    assert after != before
    assert a.read(consumer="worker-a", count=100, block_ms=0) == []  # b holds the leases now


def test_malformed_record_goes_to_dead_letters_and_the_checkpoint_moves_on(kinesis_stream):
    client, name = kinesis_stream
    client.put_record(StreamName=name, Data=b"{not json", PartitionKey="stu_bad")
    get_stream().publish([_raw("good-1", "stu_bad")])
    worker = StreamWorker(consumer="w1", block_ms=0)
    while worker.run_once():
        pass
    assert Event.objects.filter(event_id="good-1").exists()
    letter = StreamDeadLetter.objects.get(backend="kinesis")
    assert "malformed" in letter.error and letter.raw == "{not json"
    assert get_stream().read(consumer="w1", count=10, block_ms=0) == []


def test_ping_and_backlog(kinesis_stream):
    stream = get_stream()
    stream.ping()
    stream.publish([_raw("e1", "stu_1")])
    got = stream.read(consumer="c", count=10, block_ms=0)
    assert stream.backlog()["in_flight"] == 1
    stream.ack(got)
    assert stream.backlog()["in_flight"] == 0


def _raw(event_id: str, student_id: str) -> dict:
    return {
        "event_id": event_id,
        "event_type": "ib_call_logged",
        "timestamp": "2026-01-01T00:00:00+00:00",
        "received_at": "2026-01-01T00:00:00+00:00",
        "payload": {"student_id": student_id},
    }


def test_delivery_counts_survive_restarts_so_a_failing_record_is_dead_lettered(kinesis_stream, settings):
    """A record that fails processing, with the worker restarted after every attempt (a fresh process
    knows nothing of earlier deliveries): the count is kept with the shard's checkpoint, so it is
    dead-lettered after STREAM_MAX_DELIVERIES like on the other backends, not retried forever; the
    records around it are processed once."""
    _client, name = kinesis_stream
    settings.STREAM_MAX_DELIVERIES = 3
    poison = {**_raw("poison", "stu_1"), "timestamp": "yesterday-ish"}  # decodes, fails in the pipeline
    for _idle_restart in range(3):  # restarts over an empty shard count no delivery
        KinesisShard.objects.filter(stream_name=name).update(
            lease_expires_at=timezone.now() - timedelta(seconds=1)
        )
        assert StreamWorker(KinesisStream(name), block_ms=0).run_once() == 0
    KinesisStream(name).publish([_raw("ok-1", "stu_1"), poison, _raw("ok-2", "stu_1")])  # one shard, in order
    counts = []
    for _restart in range(5):
        KinesisShard.objects.filter(stream_name=name).update(
            lease_expires_at=timezone.now() - timedelta(seconds=1)
        )
        worker = StreamWorker(KinesisStream(name), block_ms=0, batch_size=10)
        worker.run_once()
        counts.append(Event.objects.count())
        if StreamDeadLetter.objects.exists():
            break
    dead = StreamDeadLetter.objects.get()
    assert dead.body["event_id"] == "poison" and dead.deliveries == 3 and dead.error.startswith("ValueError")
    assert counts == [2, 2, 2]  # dead-lettered on the third delivery, by the third process
    assert sorted(Event.objects.values_list("event_id", flat=True)) == ["ok-1", "ok-2"]
    fresh = KinesisStream(name)
    KinesisShard.objects.filter(stream_name=name).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert fresh.read(consumer="after", count=10, block_ms=0) == []  # the checkpoint moved past it


def test_admin_lists_shards_and_releases_a_lease(kinesis_stream, admin_client):
    _client, name = kinesis_stream
    stream = get_stream()
    stream.publish([_raw("e1", "stu_1")])
    stream.read(consumer="stuck-worker", count=10, block_ms=0)
    page = admin_client.get("/admin/ingest/kinesisshard/")
    assert page.status_code == 200 and b"stuck-worker" in page.content
    ids = list(KinesisShard.objects.filter(stream_name=name).values_list("pk", flat=True))
    resp = admin_client.post(
        "/admin/ingest/kinesisshard/", {"action": "release_lease", "_selected_action": [str(i) for i in ids]}
    )
    assert resp.status_code == 302
    assert not KinesisShard.objects.filter(stream_name=name).exclude(lease_owner="").exists()
    assert len(KinesisStream(name).read(consumer="other", count=10, block_ms=0)) == 1  # taken over at once


def _read_all(stream: KinesisStream, consumer: str = "c1") -> list[str]:
    """Read and ack until two reads in a row bring nothing (a finished parent hands over to its
    children on the next read)."""
    got: list[str] = []
    empty = 0
    for _ in range(50):
        batch = stream.read(consumer=consumer, count=100, block_ms=0)
        stream.ack(batch)
        got += [d.event["event_id"] for d in batch]
        empty = 0 if batch else empty + 1
        if empty == 2:
            break
    return got


def _children(client, name: str) -> list[str]:
    return [s["ShardId"] for s in client.list_shards(StreamName=name)["Shards"] if s.get("ParentShardId")]


def _hash_range(client, name: str, shard_id: str) -> tuple[int, int]:
    shard = next(s for s in client.list_shards(StreamName=name)["Shards"] if s["ShardId"] == shard_id)
    r = shard["HashKeyRange"]
    return int(r["StartingHashKey"]), int(r["EndingHashKey"])


def _closed_shards_end_as_on_aws(monkeypatch, stream: KinesisStream) -> None:
    """moto keeps handing out a NextShardIterator for a closed shard read to its end; Kinesis returns
    none there (that is how a consumer knows the parent is done and its children may start). Make
    moto's answers do the same: an empty page of a closed shard ends it."""
    client = stream.client
    real_iterator, real_records = client.get_shard_iterator, client.get_records
    shard_of: dict[str, str] = {}

    def get_shard_iterator(**kwargs):
        resp = real_iterator(**kwargs)
        shard_of[resp["ShardIterator"]] = kwargs["ShardId"]
        return resp

    def get_records(*, ShardIterator, **kwargs):  # noqa: N803 - boto3's parameter names
        resp = real_records(ShardIterator=ShardIterator, **kwargs)
        shard_id = shard_of.get(ShardIterator)
        closed = {
            s["ShardId"]
            for s in client.list_shards(StreamName=stream.stream_name)["Shards"]
            if "EndingSequenceNumber" in s["SequenceNumberRange"]
        }
        if not resp["Records"] and shard_id in closed:
            resp["NextShardIterator"] = None
        elif resp.get("NextShardIterator"):
            shard_of[resp["NextShardIterator"]] = shard_id
        return resp

    monkeypatch.setattr(client, "get_shard_iterator", get_shard_iterator)
    monkeypatch.setattr(client, "get_records", get_records)


@pytest.mark.parametrize("reshard", ["split", "merge"])
def test_resharding_keeps_every_record_and_each_entity_in_order(kinesis_stream, reshard, monkeypatch):
    """A shard split or merge mid-stream: the closed parents are read to their end before their
    children, so one student's events come out in the order they went in, none lost or repeated."""
    client, name = kinesis_stream
    stream = get_stream()
    _closed_shards_end_as_on_aws(monkeypatch, stream)
    students = [f"stu_{i}" for i in range(6)]
    before = [_raw(f"a-{s}-{n}", s) for n in range(3) for s in students]
    stream.publish(before)
    first = stream.read(consumer="c1", count=4, block_ms=0)  # part read, acked, before the reshard
    stream.ack(first)

    shards = [s["ShardId"] for s in client.list_shards(StreamName=name)["Shards"]]
    if reshard == "split":
        low, high = _hash_range(client, name, shards[0])
        client.split_shard(StreamName=name, ShardToSplit=shards[0], NewStartingHashKey=str((low + high) // 2))
    else:
        client.merge_shards(StreamName=name, ShardToMerge=shards[0], AdjacentShardToMerge=shards[1])
    after = [_raw(f"b-{s}-{n}", s) for n in range(3) for s in students]
    stream.publish(after)

    if reshard == "merge":
        # Another worker holds the adjacent parent: the merged child must wait for it too.
        KinesisShard.objects.filter(stream_name=name, shard_id=shards[1]).update(
            lease_owner="c2", lease_expires_at=timezone.now() + timedelta(minutes=5)
        )
        stream = KinesisStream(name)  # a restarted c1: only what the database says
        _closed_shards_end_as_on_aws(monkeypatch, stream)
        partial = _read_all(stream)
        child = KinesisShard.objects.get(stream_name=name, shard_id__in=_children(client, name))
        assert not child.lease_owner and not child.checkpoint, "child read before its parents"
        assert all(i.startswith("a-") for i in partial)
        KinesisShard.objects.filter(stream_name=name, shard_id=shards[1]).update(
            lease_expires_at=timezone.now() - timedelta(seconds=1)
        )  # c2 died
        read = [d.event["event_id"] for d in first] + partial + _read_all(stream)
    else:
        read = [d.event["event_id"] for d in first] + _read_all(stream)
    if reshard == "split":
        assert len(read) == len(set(read))  # nothing read twice
    # else: moto copies the parents' records into a merged shard (Kinesis does not): those repeats
    # come after the originals and are absorbed by idempotency on event_id downstream.
    read = list(dict.fromkeys(read))
    assert sorted(read) == sorted(e["event_id"] for e in before + after)  # nothing lost
    for s in students:
        mine = [i for i in read if i.split("-")[1] == s]
        assert mine == [e["event_id"] for e in before + after if e["payload"]["student_id"] == s]
    finished = KinesisShard.objects.filter(stream_name=name, checkpoint="SHARD_END")
    assert finished.count() == (1 if reshard == "split" else 2)


def _heartbeat(name: str, *, age_seconds: float = 0) -> None:
    from ingest.models import WorkerHeartbeat

    at = timezone.now() - timedelta(seconds=age_seconds)
    WorkerHeartbeat.objects.update_or_create(
        name=name, defaults={"backend": "kinesis", "started_at": at, "last_seen": at}
    )


def _owners(name: str) -> dict[str, str]:
    return dict(KinesisShard.objects.filter(stream_name=name).values_list("shard_id", "lease_owner"))


def test_a_worker_that_joins_gets_its_fair_share_of_the_shards(kinesis_stream):
    """Scale-out: a lone worker holds every shard; when a second one sends heartbeats, the first
    releases its surplus between batches and the newcomer takes it; nothing is read twice or lost."""
    _client, name = kinesis_stream
    a, b = KinesisStream(name), KinesisStream(name)
    _heartbeat("worker-a")
    a.publish([_raw(f"e{i}", f"stu_{i}") for i in range(8)])
    first = a.read(consumer="worker-a", count=100, block_ms=0)
    assert set(_owners(name).values()) == {"worker-a"}  # alone: both shards

    _heartbeat("worker-b")  # a second worker starts
    assert b.read(consumer="worker-b", count=100, block_ms=0) == []  # nothing free yet
    a.ack(first)  # a settles its batch ...
    a.publish([_raw(f"f{i}", f"stu_{i}") for i in range(8)])
    second = a.read(consumer="worker-a", count=100, block_ms=0)  # ... and gives up its surplus
    third = b.read(consumer="worker-b", count=100, block_ms=0)
    owners = _owners(name)
    assert sorted(owners.values()) == ["worker-a", "worker-b"]
    a.ack(second)
    b.ack(third)
    got = sorted(d.event["event_id"] for d in first + second + third)
    assert got == sorted([f"e{i}" for i in range(8)] + [f"f{i}" for i in range(8)])


def test_shards_of_a_worker_whose_heartbeat_stopped_are_taken_over(kinesis_stream, settings):
    _client, name = kinesis_stream
    settings.KINESIS_LEASE_SECONDS = 30
    a, b = KinesisStream(name), KinesisStream(name)
    _heartbeat("worker-a")
    _heartbeat("worker-b")
    a.read(consumer="worker-a", count=100, block_ms=0)
    b.read(consumer="worker-b", count=100, block_ms=0)
    assert sorted(_owners(name).values()) == ["worker-a", "worker-b"]  # one each
    # worker-a dies: its heartbeat ages out and its lease expires; b takes everything.
    later = timezone.now() + timedelta(seconds=settings.WORKER_HEARTBEAT_MAX_AGE_SECONDS + 31)
    with time_machine.travel(later, tick=False):
        _heartbeat("worker-b")
        b.read(consumer="worker-b", count=100, block_ms=0)
        assert set(_owners(name).values()) == {"worker-b"}
