"""Operations entry points of the ingest edge: its figures (stream backlog and lag, throughput, dead
letters, worker heartbeats) and its retention (raw events, heartbeats, suspect records).

Figures are computed from the database and the stream at call time, so every process (web, worker,
an operator's shell) reports the same numbers. iops/ops.py and iops/retention.py compose them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings

from ingest.models import Event, PendingEvent, StreamDeadLetter, SuspectDelivery, WorkerHeartbeat
from ingest.streams import DatabaseStream, EventStream, RedisStream, StreamUnavailable, get_stream
from iops.lib.prune import PruneBudget

HEARTBEAT_RETENTION = timedelta(days=7)
# Left only when a worker died between settling a slice and removing its record.
SUSPECT_RETENTION = timedelta(days=7)


@dataclass
class WorkerRow:
    name: str
    backend: str
    started_at: datetime
    last_seen: datetime
    age_seconds: float
    processed: int
    batches: int
    batch_seconds_sum: float
    batch_buckets: dict[str, int]


def workers(*, now: datetime) -> list[WorkerRow]:
    return [
        WorkerRow(
            name=h.name,
            backend=h.backend,
            started_at=h.started_at,
            last_seen=h.last_seen,
            age_seconds=max(0.0, (now - h.last_seen).total_seconds()),
            processed=h.processed,
            batches=h.batches,
            batch_seconds_sum=h.batch_seconds_sum,
            batch_buckets=h.batch_buckets or {},
        )
        for h in WorkerHeartbeat.objects.order_by("-last_seen")
    ]


def freshest_heartbeat_age(*, now: datetime) -> float | None:
    last = WorkerHeartbeat.objects.order_by("-last_seen").values_list("last_seen", flat=True).first()
    return None if last is None else max(0.0, (now - last).total_seconds())


def backlog(*, now: datetime | None = None) -> dict[str, Any]:
    """The stream's backlog (`waiting`, `in_flight`, kinesis: `millis_behind_latest`), or an error.

    With `now`, also `oldest_seconds`: the age of the oldest event accepted and not yet processed
    (None when nothing is waiting) — the consumer lag in time.
    """
    stream = get_stream()
    try:
        result = {"backend": stream.name, "available": True, **stream.backlog()}
    except StreamUnavailable as exc:
        return {"backend": stream.name, "available": False, "error": str(exc)[:200]}
    if now is not None:
        result["oldest_seconds"] = oldest_unprocessed_seconds(stream, now=now)
    return result


def oldest_unprocessed_seconds(stream: EventStream, *, now: datetime) -> float | None:
    """Age of the oldest accepted event not yet acked (waiting or in flight), or None.

    database: the first `PendingEvent` row (acked rows are deleted). redis: the first entry of the
    stream (acked and dead-lettered entries are XDEL'd), aged by its id's millisecond time, which is
    the Redis server's clock. kinesis: None (`millis_behind_latest` says it).
    """
    if isinstance(stream, DatabaseStream):
        first = PendingEvent.objects.order_by("id").values_list("enqueued_at", flat=True).first()
        return None if first is None else round(max(0.0, (now - first).total_seconds()), 3)
    if isinstance(stream, RedisStream):
        import redis

        try:
            entries = stream.client.xrange(stream.key, count=1)
        except redis.RedisError:
            return None
        if not entries:
            return None
        first_id = entries[0][0]
        entry_id = first_id.decode() if isinstance(first_id, bytes) else str(first_id)
        millis = int(entry_id.split("-")[0])
        return round(max(0.0, now.timestamp() - millis / 1000), 3)
    return None


def events_per_second(*, now: datetime, seconds: int = 60) -> float:
    """Events stored over the last `seconds` (by processing time; uses the processed_at index)."""
    n = Event.objects.filter(processed_at__gt=now - timedelta(seconds=seconds), processed_at__lte=now).count()
    return n / seconds


def stream_dead_letters() -> int:
    return StreamDeadLetter.objects.count()


@dataclass(frozen=True)
class IngestCounts:
    stream: dict[str, Any]  # backlog(now=...)
    events_per_second_1m: float
    stream_dead_letters: int
    workers: list[WorkerRow]


def ingest_counts(*, now: datetime) -> IngestCounts:
    return IngestCounts(
        stream=backlog(now=now),
        events_per_second_1m=events_per_second(now=now, seconds=60),
        stream_dead_letters=stream_dead_letters(),
        workers=workers(now=now),
    )


def ingest_prune(*, now: datetime, budget: PruneBudget) -> int:
    """Raw events past EVENT_RETENTION_DAYS (kept longer than the 30-day windows they feed), worker
    heartbeats and suspect-slice records past a week; the number of rows deleted."""
    plan = (
        (Event, "occurred_at", now - timedelta(days=settings.EVENT_RETENTION_DAYS)),
        (WorkerHeartbeat, "last_seen", now - HEARTBEAT_RETENTION),
        (SuspectDelivery, "started_at", now - SUSPECT_RETENTION),
    )
    return sum(budget.delete_older(model, column=column, cutoff=cutoff) for model, column, cutoff in plan)
