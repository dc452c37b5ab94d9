"""A batch of events, the same function in the embedded thread and in Celery workers: store the new ones
(exactly once by event_id) → fold metrics → evaluate alerts → route → after commit: pipeline.effects.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction

from alerts.rules import VELOCITY_LIVE_WINDOW
from alerts.services import Raised, alerts_evaluate
from ingest.models import Event  # the raw event table: the one named exception to the import direction
from iops.lib.jsontext import json_text
from iops.lib.sql import insert_returning_new
from metrics.services import fold_events, retention_horizon
from pipeline.effects import after_pass

logger = logging.getLogger(__name__)


@dataclass
class BatchResult:
    received: int
    new: int
    duplicates: int
    alerts: list[Raised] = field(default_factory=list)
    seconds: float = 0.0


EVENT_COLUMNS = [
    "event_id",
    "event_type",
    "occurred_at",
    "received_at",
    "processed_at",
    "student_id",
    "tutor_id",
    "late",
    "payload",
]


def event_rows(events: Iterable[dict[str, Any]], now: datetime) -> list[tuple]:
    """The raw event table's rows (EVENT_COLUMNS) for validated events processed at `now`."""
    horizon = retention_horizon(now)
    rows = []
    for e in events:
        occurred = datetime.fromisoformat(e["timestamp"])
        p = e["payload"]
        rows.append(
            (
                e["event_id"],
                e["event_type"],
                occurred,
                datetime.fromisoformat(e["received_at"]),
                now,
                str(p.get("student_id", "")),
                str(p.get("tutor_id", "")),
                occurred < horizon,
                json_text(p),
            )
        )
    return rows


def _store_events(events: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    unique: dict[str, dict[str, Any]] = {}
    for e in events:
        unique.setdefault(e["event_id"], e)
    inserted = insert_returning_new(
        table=Event._meta.db_table,
        columns=EVENT_COLUMNS,
        rows=event_rows(unique.values(), now),
        conflict="event_id",
    )
    return [e for eid, e in unique.items() if eid in inserted]


def _live_students(events: list[dict[str, Any]], now: datetime) -> set[str]:
    """Students with an event from the last VELOCITY_LIVE_WINDOW: their velocity is judged now; the
    others' (history arriving late) by the clock once it has settled (alerts.rules)."""
    since = now - VELOCITY_LIVE_WINDOW
    return {
        str(e["payload"]["student_id"])
        for e in events
        if e["payload"].get("student_id") and datetime.fromisoformat(e["timestamp"]) >= since
    }


def process_batch(events: list[dict[str, Any]], *, now: datetime) -> BatchResult:
    started = time.perf_counter()
    with transaction.atomic():
        new = _store_events(events, now)
        touched = fold_events(new, now=now)
        raised = (
            alerts_evaluate(touched=touched, now=now, velocity_students=_live_students(new, now))
            if touched
            else []
        )
        after_pass(raised, now=now, events=len(new))  # routing in this transaction; the rest after commit
    result = BatchResult(
        received=len(events),
        new=len(new),
        duplicates=len(events) - len(new),
        alerts=raised,
        seconds=time.perf_counter() - started,
    )
    logger.debug(
        "batch processed",
        extra={
            "received": result.received,
            "new": result.new,
            "alerts": len(raised),
            "ms": round(result.seconds * 1000, 1),
        },
    )
    return result
