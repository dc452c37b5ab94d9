"""Rebuild: every derived table emptied and recomputed from stored events by the live fold, then one
snapshot refresh as of `now` (a rebuild equals live processing)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection, transaction

from metrics.models import (
    GlobalMinute,
    Session,
    StudentHourly,
    StudentSessionFacts,
    StudentSnapshot,
    SubjectRegionSnapshot,
    SupplyDemandReading,
    TutorHourly,
    TutorSnapshot,
)
from metrics.services.cells import subject_regions_refresh
from metrics.services.fold import fold_events
from metrics.services.snapshots import snapshots_refresh

DERIVED_MODELS = (
    Session,
    StudentHourly,
    TutorHourly,
    GlobalMinute,
    StudentSessionFacts,
    StudentSnapshot,
    TutorSnapshot,
    SubjectRegionSnapshot,
    SupplyDemandReading,
)


@dataclass(frozen=True)
class RebuildResult:
    """What a rebuild recomputed: the events folded and the snapshot rows refreshed."""

    events: int
    students: int
    tutors: int
    subject_regions: int


def metrics_clear() -> None:
    """Empty every derived table. Inside the rebuild's transaction: readers keep the old figures until
    commit, and on PostgreSQL TRUNCATE's lock holds the stream worker back until the rebuild is done."""
    tables = [m._meta.db_table for m in DERIVED_MODELS]
    q = connection.ops.quote_name
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"TRUNCATE {', '.join(q(t) for t in tables)}")  # noqa: S608 - model metadata
        else:
            for t in tables:
                cursor.execute(f"DELETE FROM {q(t)}")  # noqa: S608 - model metadata


def metrics_rebuild(
    *,
    batches: Iterable[list[dict[str, Any]]],
    now: datetime,
    on_batch: Callable[[int], None] | None = None,
) -> RebuildResult:
    """Recompute every derived row from stored events (normalised dicts, in event-time order),
    in one transaction: the same fold as live processing, then one snapshot refresh as of `now`."""
    events = 0
    with transaction.atomic():
        metrics_clear()
        for batch in batches:
            fold_events(batch, now=now, refresh=False)
            events += len(batch)
            if on_batch is not None:
                on_batch(len(batch))
        students = list(StudentSnapshot.objects.values_list("student_id", flat=True))
        tutors = list(TutorSnapshot.objects.values_list("tutor_id", flat=True))
        snapshots_refresh(students=students, tutors=tutors, now=now)
        cells = subject_regions_refresh(now=now)
    return RebuildResult(events=events, students=len(students), tutors=len(tutors), subject_regions=cells)
