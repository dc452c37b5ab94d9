"""The aggregation step: fold a batch of new events into sessions, buckets and platform readings, then
refresh the touched snapshots.

Cost grows with the entities a batch touches, not with history: one bulk upsert per bucket table,
one monotone upsert of first/last-session facts, and per snapshot table one read of window sums over
hour buckets and one upsert of the recomputed rows. Hot paths use plain rows and raw statements,
not model instances.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings

from metrics.services import snapshots
from metrics.services.balance import apply_supply_demand
from metrics.services.buckets import fold_buckets
from metrics.services.reports import AVAILABILITY, HEALTH
from metrics.services.sessions import fold_facts, session_deltas
from metrics.services.snapshots import Touched, snapshots_ensure, snapshots_lock


def fold_events(events: list[dict[str, Any]], *, now: datetime, refresh: bool = True) -> Touched:
    """Fold new (deduplicated) normalised events into buckets and snapshots. Call inside a transaction.

    `refresh=False` (rebuild) skips the per-batch snapshot refresh: the caller refreshes once at the end.
    """
    touched = Touched()
    if not events:
        return touched
    for e in events:
        p = e["payload"]
        if p.get("student_id"):
            touched.students.add(p["student_id"])
        if p.get("tutor_id"):
            touched.tutors.add(p["tutor_id"])
    outcome = session_deltas(events)
    fold_buckets(outcome.deltas, events)
    fold_facts(outcome)
    if not refresh:
        snapshots_ensure(students=touched.students, tutors=touched.tutors, now=now)
    else:
        snapshots_lock(students=touched.students, tutors=touched.tutors)
    touched.health_reported = HEALTH.apply(events, now)
    AVAILABILITY.apply(events, now)
    touched.subject_regions = apply_supply_demand(events, now)
    touched.first_sessions = {s.student_id for s in outcome.completed.values()}
    if refresh:
        # Through the module: a profiler (bench/aggregate.py) times the refresh as its own phase.
        touched.student_views, touched.tutor_views = snapshots.snapshots_refresh(
            students=touched.students, tutors=touched.tutors, now=now
        )
    return touched


def retention_horizon(now: datetime) -> datetime:
    """Events older than this are past retention (EVENT_RETENTION_DAYS)."""
    return now - timedelta(days=settings.EVENT_RETENTION_DAYS)
