"""Operations entry points of metrics: retention of the buckets and the figures /metrics reports.

Called by plain imports from iops/ops.py and iops/retention.py (the composition root)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Sum

from iops.lib.prune import PruneBudget
from metrics.models import GlobalMinute, StudentHourly, TutorHourly


@dataclass(frozen=True)
class MetricsCounts:
    events_processed: int  # events stored, summed from the per-minute series


def metrics_counts() -> MetricsCounts:
    # The per-minute series is cheap to sum (one row a minute, not one an event).
    return MetricsCounts(events_processed=GlobalMinute.objects.aggregate(n=Sum("received"))["n"] or 0)


def metrics_prune(*, now: datetime, budget: PruneBudget) -> int:
    """Per-minute and per-hour buckets older than AGGREGATE_RETENTION_DAYS; the number deleted.
    Snapshots are one row per entity, rewritten in place: nothing to expire."""
    cutoff = now - timedelta(days=settings.AGGREGATE_RETENTION_DAYS)
    plan = ((GlobalMinute, "minute"), (StudentHourly, "hour"), (TutorHourly, "hour"))
    return sum(budget.delete_older(model, column=column, cutoff=cutoff) for model, column in plan)
