"""Snapshot refreshes: the touched entities after a batch, the stale ones as windows decay with time,
and the rows of entities first seen when a rebuild refreshes once at the end."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import SimpleNamespace

from django.db import connection
from django.db.models import Q

from iops.lib.sql import pg_execute
from metrics.models import StudentSnapshot, TutorSnapshot
from metrics.services.cells import Cell, subject_regions_refresh
from metrics.services.columns import STUDENT_TABLE, TUTOR_TABLE
from metrics.services.db import vendor_c
from metrics.services.students import refresh_students
from metrics.services.tutors import refresh_tutors


@dataclass
class Touched:
    students: set[str] = field(default_factory=set)
    tutors: set[str] = field(default_factory=set)
    subject_regions: set[Cell] = field(default_factory=set)
    health_reported: set[str] = field(default_factory=set)
    first_sessions: set[str] = field(default_factory=set)
    # The refreshed snapshots' rule inputs, as written in this transaction (the alert rules read
    # these instead of the rows; absent when the batch did not refresh).
    student_views: dict[str, SimpleNamespace] | None = None
    tutor_views: dict[str, SimpleNamespace] | None = None

    def __bool__(self) -> bool:
        return bool(self.students or self.tutors or self.subject_regions)


def snapshots_refresh(
    *, students: set[str] | list[str], tutors: set[str] | list[str], now: datetime
) -> tuple[dict[str, SimpleNamespace], dict[str, SimpleNamespace]]:
    """Recompute the windowed part of snapshots for these entities as of `now` (windows decay),
    creating missing rows. Returns each entity's alert-rule inputs as written."""
    return refresh_students(sorted(students), now), refresh_tutors(sorted(tutors), now)


def snapshots_lock(*, students: set[str], tutors: set[str]) -> None:
    """Lock the stored snapshot rows a batch writes, students then tutors, each in id order, before
    its first snapshot write (PostgreSQL). A batch writes both tables twice: the platform's readings
    (health, availability), then the refresh. Each pass is in id order, but two passes are not one
    order: two workers sharing students or tutors deadlocked (one batch rolled back and read again
    after STREAM_CLAIM_IDLE_MS; bench/aggregate.py --partitioned: 20-34 deadlocks a run). Rows
    created later in the batch are new keys, inserted in id order by each pass."""
    if connection.vendor != "postgresql":
        return  # SQLite: one writer at a time
    for table, ids in ((STUDENT_TABLE, students), (TUTOR_TABLE, tutors)):
        if ids:
            key = connection.ops.quote_name(table.key)
            pg_execute(
                f"SELECT 1 FROM {connection.ops.quote_name(table.model._meta.db_table)} "  # noqa: S608 - model metadata
                f"WHERE {key} = ANY(%b::varchar[]) ORDER BY {vendor_c(key)} FOR UPDATE",
                [sorted(ids)],
            )


def snapshots_ensure(*, students: set[str], tutors: set[str], now: datetime) -> None:
    """Rows for entities first seen, when the batch does not refresh them (the rebuild)."""
    STUDENT_TABLE.ensure(students, now)
    TUTOR_TABLE.ensure(tutors, now)


def snapshots_refresh_stale(
    *, now: datetime, older_than: timedelta = timedelta(hours=1), limit: int = 5000
) -> Touched:
    """Windows decay with time, not only with events: re-evaluate snapshots not refreshed recently.
    Returns the students and tutors refreshed (the alert rules run over them next)."""
    cutoff = now - older_than
    # Only snapshots with something left in a window can still decay.
    students = list(
        StudentSnapshot.objects.filter(as_of__lt=cutoff)
        .filter(
            Q(sessions_30d__gt=0)
            | Q(ib_calls_30d__gt=0)
            | Q(sessions_started_30d__gt=0)
            | Q(observed_since__isnull=False)
        )
        .values_list("student_id", flat=True)[:limit]
    )
    tutors = list(
        TutorSnapshot.objects.filter(as_of__lt=cutoff)
        .filter(Q(sessions_30d__gt=0) | Q(sessions_started_30d__gt=0))
        .values_list("tutor_id", flat=True)[:limit]
    )
    student_views, tutor_views = snapshots_refresh(students=students, tutors=tutors, now=now)
    subject_regions_refresh(now=now)
    return Touched(
        students=set(students), tutors=set(tutors), student_views=student_views, tutor_views=tutor_views
    )
