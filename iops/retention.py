"""Retention (issue 9): one run over every app's prune — raw events older than EVENT_RETENTION_DAYS,
per-minute and per-hour buckets and insights older than AGGREGATE_RETENTION_DAYS, heartbeats —, in
bounded batches (iops/lib/prune.py) within one time budget; a run cut short is continued by the next.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

from django.conf import settings

from alerts.ops import alerts_prune
from ingest.ops import ingest_prune
from insights.ops import insights_prune
from iops.lib.prune import PruneBudget
from metrics.ops import metrics_prune

logger = logging.getLogger(__name__)

# Raw events first: the largest table, and the one the windows no longer need soonest.
PRUNES = (ingest_prune, metrics_prune, alerts_prune, insights_prune)


def retention_run(*, now: datetime, max_seconds: float = 300.0) -> PruneBudget:
    started = time.monotonic()
    budget = PruneBudget(batch_size=settings.RETENTION_BATCH_SIZE, deadline=started + max_seconds)
    for prune in PRUNES:
        prune(now=now, budget=budget)
    elapsed = time.monotonic() - started
    removed = sum(budget.deleted.values())
    logger.info(
        "retention: deleted %d rows in %d batches (%.0f rows/s)%s",
        removed,
        budget.batches,
        removed / elapsed if elapsed > 0 else 0.0,
        "" if budget.complete else "; time is up, the next run continues",
        extra={"deleted": budget.deleted, "batches": budget.batches, "complete": budget.complete},
    )
    return budget
