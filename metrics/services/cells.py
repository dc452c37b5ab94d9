"""Subject × region cells: their snapshot rows, and our own demand/supply figures per cell from
sessions and tutor availability."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Q

from iops.lib.sql import update_rows
from metrics.models import Session, SubjectRegionSnapshot, TutorSnapshot
from metrics.regions import REGION_TIMEZONES
from metrics.services.columns import CELL_INSERT
from metrics.services.db import rows_ensure
from metrics.windows import window_start

Cell = tuple[str, str]  # (subject, region)
Pool = tuple[str, str]  # (subject, tutor timezone)


def cell_rows(cells: set[Cell], now: datetime) -> dict[Cell, SubjectRegionSnapshot]:
    """The snapshot rows of these cells, created when missing."""
    rows_ensure(
        model=SubjectRegionSnapshot,
        keys=["subject", "region"],
        ids=cells,
        defaults={**CELL_INSERT, "updated_at": now},
    )
    subjects = {s for s, _ in cells}
    regions = {r for _, r in cells}
    return {
        (snap.subject, snap.region): snap
        for snap in SubjectRegionSnapshot.objects.filter(subject__in=subjects, region__in=regions)
        if (snap.subject, snap.region) in cells
    }


@dataclass
class _Pools:
    """Per pool: the hours of the tutors offering the subject, the students taught, the sessions."""

    hours: dict[Pool, list[float]] = field(default_factory=dict)
    students: dict[Pool, set[str]] = field(default_factory=dict)
    sessions: dict[Pool, int] = field(default_factory=dict)
    tutor_tz: dict[str, str] = field(default_factory=dict)

    def read_supply(self) -> None:
        """Tutors whose latest availability lists the subject with hours > 0, by their timezone."""
        for tutor_id, tz, hours, subjects in TutorSnapshot.objects.exclude(timezone="").values_list(
            "tutor_id", "timezone", "available_hours", "subjects"
        ):
            self.tutor_tz[tutor_id] = tz
            if hours and hours > 0:
                for subject in set(subjects or []):
                    self.hours.setdefault((subject, tz), []).append(float(hours))

    def read_demand(self, now: datetime) -> None:
        """Distinct students with a session started or completed in 7 days, in its tutor's timezone."""
        cut = window_start(now, 7)
        recent = Session.objects.filter(
            Q(started_at__gte=cut, started_at__lte=now) | Q(completed_at__gte=cut, completed_at__lte=now)
        ).exclude(subject="")
        for subject, tutor_id, student_id in recent.values_list("subject", "tutor_id", "student_id").iterator(
            chunk_size=5000
        ):
            tz = self.tutor_tz.get(tutor_id)
            if tz is None:
                continue  # region unknown until the tutor reports a timezone
            self.students.setdefault((subject, tz), set()).add(student_id)
            self.sessions[(subject, tz)] = self.sessions.get((subject, tz), 0) + 1

    def cells(self) -> set[Cell]:
        """The cells of every pool with supply or demand (a region reads the pool of its timezone)."""
        pools = set(self.hours) | set(self.students)
        return {
            (subject, region)
            for subject, tz in pools
            for region, zone in REGION_TIMEZONES.items()
            if zone == tz
        }


def subject_regions_refresh(*, now: datetime) -> int:
    """Our own demand/supply figures per subject × region, from sessions and tutor availability.

    Pools are (subject, tutor timezone): a session belongs to its tutor's timezone (students carry no
    region), a region reads the pool of its timezone. Demand = distinct students with a session
    started or completed in 7 days; supply = tutors whose latest availability lists the subject with
    hours > 0, scaled by the marketplace's students per available tutor. own_ratio =
    (students + 1) / (tutors × norm + 1): 1 is a typical load, 1.5 is 50 % more students per tutor.
    """
    pools = _Pools()
    pools.read_supply()
    pools.read_demand(now)
    existing = set(SubjectRegionSnapshot.objects.values_list("subject", "region"))
    if missing := pools.cells() - existing:
        cell_rows(missing, now)
    snaps = list(SubjectRegionSnapshot.objects.all())
    total_tutors = sum(len(v) for v in pools.hours.values())
    norm = sum(len(v) for v in pools.students.values()) / total_tutors if total_tutors else 0.0
    for snap in snaps:
        tz = REGION_TIMEZONES.get(snap.region)
        pool = (snap.subject, tz) if tz else None
        hours = pools.hours.get(pool, []) if pool else []
        snap.active_students = len(pools.students.get(pool, ())) if pool else 0
        snap.available_tutors = len(hours)
        snap.available_hours = round(sum(hours), 1) if pool else 0.0
        snap.sessions_7d = pools.sessions.get(pool, 0) if pool else 0
        snap.own_ratio = (
            round((snap.active_students + 1) / (snap.available_tutors * norm + 1), 3)
            if pool and total_tutors
            else None
        )
        snap.own_as_of = now
        snap.updated_at = now
    update_rows(
        model=SubjectRegionSnapshot,
        key="id",
        objs=snaps,
        fields=[
            "active_students",
            "available_tutors",
            "available_hours",
            "sessions_7d",
            "own_ratio",
            "own_as_of",
            "updated_at",
        ],
    )
    return len(snaps)
