"""Read-only figures about the running pipeline, shared by /healthz, /metrics and `pipeline_status`.

Everything is computed from the database and the stream at call time, so every process (web, worker,
an operator's shell) reports the same numbers. Parts owned by other apps are read when present.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Sum

from ingest.models import StreamDeadLetter, WorkerHeartbeat
from ingest.streams import StreamUnavailable, get_stream

logger = logging.getLogger(__name__)


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


def oldest_unprocessed_seconds(stream, *, now: datetime) -> float | None:
    """Age of the oldest accepted event not yet acked (waiting or in flight), or None.

    database: the first `PendingEvent` row (acked rows are deleted). redis: the first entry of the
    stream (acked and dead-lettered entries are XDEL'd), aged by its id's millisecond time, which is
    the Redis server's clock. kinesis: None (`millis_behind_latest` says it).
    """
    if stream.name == "database":
        from ingest.models import PendingEvent

        first = PendingEvent.objects.order_by("id").values_list("enqueued_at", flat=True).first()
        return None if first is None else round(max(0.0, (now - first).total_seconds()), 3)
    if stream.name == "redis":
        import redis

        try:
            entries = stream.client.xrange(stream.key, count=1)
        except redis.RedisError:
            return None
        if not entries:
            return None
        entry_id = entries[0][0]
        millis = int((entry_id.decode() if isinstance(entry_id, bytes) else entry_id).split("-")[0])
        return round(max(0.0, now.timestamp() - millis / 1000), 3)
    return None


def events_per_second(*, now: datetime, seconds: int = 60) -> float:
    """Events stored over the last `seconds` (by processing time; uses the processed_at index)."""
    from ingest.models import Event

    n = Event.objects.filter(processed_at__gt=now - timedelta(seconds=seconds), processed_at__lte=now).count()
    return n / seconds


def events_received_total() -> int:
    """Events stored, from the per-minute series (cheap: one row a minute, not one a event)."""
    from metrics.models import GlobalMinute

    return GlobalMinute.objects.aggregate(n=Sum("received"))["n"] or 0


def stream_dead_letters() -> int:
    return StreamDeadLetter.objects.count()


def alert_counts() -> list[tuple[str, str, int]]:
    """(severity, status, count) for every alert."""
    try:
        from alerts.models import Alert
    except ImportError:  # pragma: no cover - alerts always exists today
        return []
    return [
        (r["severity"], r["status"], r["n"])
        for r in Alert.objects.values("severity", "status").annotate(n=Count("id")).order_by()
    ]


def delivery_counts() -> dict[str, int] | None:
    """Alert deliveries by status (`dead` are the dead letters); None while deliveries do not exist."""
    try:
        from alerts.models import AlertDelivery
    except ImportError:
        return None
    return dict(AlertDelivery.objects.values_list("status").annotate(n=Count("id")).order_by())


def insight_counts() -> list[tuple[str, bool, int]]:
    """(model, fell back?, count) of stored insights: churn model calls and fallbacks."""
    try:
        from insights.models import Insight
    except ImportError:  # pragma: no cover
        return []
    rows = (  # copies (a cached insight answering another alert) are not scorings
        Insight.objects.filter(cached_from__isnull=True)
        .values("model", "fallback_reason")
        .annotate(n=Count("id"))
        .order_by()
    )
    merged: dict[tuple[str, bool], int] = {}
    for r in rows:
        key = (r["model"], bool(r["fallback_reason"]))
        merged[key] = merged.get(key, 0) + r["n"]
    return [(model, fell_back, n) for (model, fell_back), n in sorted(merged.items())]


def model_call_counts(*, now: datetime) -> dict[str, int] | None:
    """insights.selectors.model_call_counts when the churn work provides it (live call outcomes)."""
    try:
        from insights import selectors
    except ImportError:
        return None
    fn = getattr(selectors, "model_call_counts", None)
    if fn is None:
        return None
    try:
        result = fn(now=now)
    except TypeError:
        result = fn()
    except Exception as exc:  # noqa: BLE001 - someone else's code must not break a scrape
        logger.warning("model_call_counts failed", extra={"error": exc.__class__.__name__})
        return None
    return {str(k): int(v) for k, v in dict(result).items() if isinstance(v, int | float)}
