"""Retention (issue 9): raw events older than EVENT_RETENTION_DAYS, per-minute and per-hour buckets
and insights older than AGGREGATE_RETENTION_DAYS, deleted in bounded batches by id range.

Each batch is one short transaction (`DELETE ... WHERE id BETWEEN lo AND hi AND <older than>`), so
the workers' writes never wait long and a run stopped halfway leaves a consistent database; the next
run carries on. Raw events are kept longer (45 days by default) than the 30-day windows they feed.
"""

from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction

logger = logging.getLogger(__name__)

HEARTBEAT_RETENTION = timedelta(days=7)
SUSPECT_RETENTION = timedelta(days=7)


@dataclass
class RetentionResult:
    deleted: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    complete: bool = True  # False when max_seconds ran out first (the next run continues)


def _purge(
    model, *, column: str, cutoff: datetime, batch_size: int, deadline: float, result: RetentionResult
):
    label = model._meta.label
    total = 0
    old = model.objects.filter(**{f"{column}__lt": cutoff})
    while True:
        if time.monotonic() > deadline:
            result.complete = False
            break
        ids = list(old.order_by("id").values_list("id", flat=True)[:batch_size])
        if not ids:
            break
        with transaction.atomic():
            n, _ = old.filter(id__gte=ids[0], id__lte=ids[-1]).delete()
        total += n
        result.batches += 1
        if len(ids) < batch_size:
            break
    result.deleted[label] = total


def _insights_purge(*, now: datetime, cutoff: datetime, result: RetentionResult, deadline: float) -> None:
    """insights.services.insights_purge when the insights app provides it, else a plain batched delete."""
    try:
        from insights import services
    except ImportError:
        services = None
    fn = getattr(services, "insights_purge", None) if services is not None else None
    if fn is None:
        from insights.models import Insight

        _purge(
            Insight,
            column="scored_at",
            cutoff=cutoff,
            batch_size=settings.RETENTION_BATCH_SIZE,
            deadline=deadline,
            result=result,
        )
        return
    offered = {
        "now": now,
        "cutoff": cutoff,
        "before": cutoff,
        "older_than": cutoff,
        "days": settings.AGGREGATE_RETENTION_DAYS,
        "batch_size": settings.RETENTION_BATCH_SIZE,
    }
    params = inspect.signature(fn).parameters
    n = fn(**{k: v for k, v in offered.items() if k in params})
    result.deleted["insights.Insight"] = int(n[0] if isinstance(n, tuple) else n or 0)


def retention_run(*, now: datetime, max_seconds: float = 300.0) -> RetentionResult:
    from ingest.models import Event, SuspectDelivery, WorkerHeartbeat
    from metrics.models import GlobalMinute, StudentHourly, TutorHourly

    started = time.monotonic()
    deadline = started + max_seconds
    result = RetentionResult()
    batch = settings.RETENTION_BATCH_SIZE
    events_cutoff = now - timedelta(days=settings.EVENT_RETENTION_DAYS)
    aggregate_cutoff = now - timedelta(days=settings.AGGREGATE_RETENTION_DAYS)
    plan = [
        (Event, "occurred_at", events_cutoff),
        (GlobalMinute, "minute", aggregate_cutoff),
        (StudentHourly, "hour", aggregate_cutoff),
        (TutorHourly, "hour", aggregate_cutoff),
        (WorkerHeartbeat, "last_seen", now - HEARTBEAT_RETENTION),
        # Left only when a worker died between settling a slice and removing its record.
        (SuspectDelivery, "started_at", now - SUSPECT_RETENTION),
    ]
    for model, column, cutoff in plan:
        _purge(model, column=column, cutoff=cutoff, batch_size=batch, deadline=deadline, result=result)
    if time.monotonic() <= deadline:
        _insights_purge(now=now, cutoff=aggregate_cutoff, result=result, deadline=deadline)
    else:
        result.complete = False
    elapsed = time.monotonic() - started
    removed = sum(result.deleted.values())
    logger.info(
        "retention: deleted %d rows in %d batches (%.0f rows/s)%s",
        removed,
        result.batches,
        removed / elapsed if elapsed > 0 else 0.0,
        "" if result.complete else "; time is up, the next run continues",
        extra={"deleted": result.deleted, "batches": result.batches, "complete": result.complete},
    )
    return result
