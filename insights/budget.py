"""The Bedrock call budget: an atomic claim per call, shared by every worker through the database.

One counter row per calendar minute and per UTC day (BedrockBudget). A call is made only after
both counters were incremented by conditional UPDATEs (calls = calls + 1 WHERE calls < limit) in one
transaction: the database serialises concurrent increments of a row (PostgreSQL re-checks the WHERE
on the row a concurrent writer committed; SQLite has one writer at a time), so N workers racing for
the last slot get exactly one claim between them. A claimed call counts whatever happens next (it
cost money or met throttling).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F

from insights.models import BedrockBudget

MINUTE, DAY = "minute", "day"
# Counter rows older than this are deleted by insights_purge (the day window needs one day).
KEEP = timedelta(days=2)


def windows(now: datetime) -> list[tuple[str, datetime, int]]:
    """(window, start, limit) for the minute and the UTC day that contain `now`."""
    minute = now.astimezone(UTC).replace(second=0, microsecond=0)
    day = minute.replace(hour=0, minute=0)
    return [
        (MINUTE, minute, settings.INSIGHTS_BEDROCK_MAX_PER_MINUTE),
        (DAY, day, settings.INSIGHTS_BEDROCK_MAX_PER_DAY),
    ]


def budget_claim(*, now: datetime) -> str:
    """Claim one Bedrock call: "" when claimed, else the fallback reason ("budget: …").

    Both windows are claimed in one transaction, the minute first (every claimer locks the rows in
    the same order: no deadlock); when the day is spent the minute's claim is rolled back."""
    spans = windows(now)
    BedrockBudget.objects.bulk_create(
        [BedrockBudget(window=w, start=start, calls=0) for w, start, _ in spans],
        ignore_conflicts=True,
    )
    with transaction.atomic():
        for window, start, limit in spans:
            claimed = BedrockBudget.objects.filter(window=window, start=start, calls__lt=limit).update(
                calls=F("calls") + 1
            )
            if not claimed:
                transaction.set_rollback(True)
                name = (
                    "INSIGHTS_BEDROCK_MAX_PER_MINUTE" if window == MINUTE else "INSIGHTS_BEDROCK_MAX_PER_DAY"
                )
                return f"budget: {limit} Bedrock calls this {window} ({name})"
    return ""


def budget_purge(*, now: datetime) -> int:
    return BedrockBudget.objects.filter(start__lt=now - KEEP).delete()[0]
