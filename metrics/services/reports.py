"""Latest-wins readings the platform reports about an entity (a student's health, a tutor's
availability), each reading as a whole: one conditional upsert per snapshot table, decided under the
row lock, so a late reading never overwrites a newer one."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from metrics.models import StudentSnapshot, TutorSnapshot
from metrics.regions import region_label
from metrics.services.columns import STUDENT_INSERT, TUTOR_INSERT
from metrics.services.db import snapshot_upsert, vendor_c


def order_key(e: dict[str, Any]) -> tuple[datetime, str]:
    """An event's place in event time: (timestamp, event_id), so ties cannot depend on arrival order."""
    return (datetime.fromisoformat(e["timestamp"]), e["event_id"])


def _latest(
    events: list[dict[str, Any]], event_type: str, key: Callable[[dict[str, Any]], str]
) -> dict[str, dict[str, Any]]:
    """The latest event per key by (event time, event_id)."""
    latest: dict[str, dict[str, Any]] = {}
    for e in events:
        if e["event_type"] != event_type:
            continue
        k = key(e["payload"])
        if k not in latest or order_key(e) > order_key(latest[k]):
            latest[k] = e
    return latest


def _newer_than_stored(at: str, event_id: str) -> str:
    """Latest wins by (event time, event_id): a late reading never overwrites a newer one."""
    return (
        f"{{t}}.{at} IS NULL OR ({{t}}.{at}, {vendor_c('{t}.' + event_id)}) "
        f"<= (excluded.{at}, {vendor_c('excluded.' + event_id)})"
    )


def _health_row(student_id: str, e: dict[str, Any]) -> dict[str, Any]:
    p = e["payload"]
    return {
        "student_id": student_id,
        "platform_health_score": p.get("health_score"),
        "platform_churn_risk": p.get("churn_risk") or "",
        "platform_reported_at": datetime.fromisoformat(e["timestamp"]),
        "platform_event_id": e["event_id"],
    }


def _availability_row(tutor_id: str, e: dict[str, Any]) -> dict[str, Any]:
    p = e["payload"]
    tz = p.get("timezone") or ""
    return {
        "tutor_id": tutor_id,
        "available_hours": p.get("available_hours_this_week"),
        "subjects": json.dumps(list(p.get("subjects") or [])),
        "timezone": tz,
        "region": region_label(tz),
        "accepts_instant_book": p.get("accepts_instant_book"),
        "availability_reported_at": datetime.fromisoformat(e["timestamp"]),
        "availability_event_id": e["event_id"],
    }


def apply_reports(events: list[dict[str, Any]], now: datetime) -> set[str]:
    """Write the batch's latest health and availability readings where they are newer than the stored
    ones. Returns the students whose health reading was applied."""
    health = _latest(events, "customer_health_update", lambda p: p["student_id"])
    applied = snapshot_upsert(
        model=StudentSnapshot,
        key="student_id",
        insert_defaults=STUDENT_INSERT,
        rows=[_health_row(sid, e) for sid, e in sorted(health.items())],
        now=now,
        where=_newer_than_stored("platform_reported_at", "platform_event_id"),
    )
    availability = _latest(events, "tutor_availability_updated", lambda p: p["tutor_id"])
    snapshot_upsert(
        model=TutorSnapshot,
        key="tutor_id",
        insert_defaults=TUTOR_INSERT,
        rows=[_availability_row(tid, e) for tid, e in sorted(availability.items())],
        now=now,
        where=_newer_than_stored("availability_reported_at", "availability_event_id"),
    )
    return {student_id for (student_id,) in applied}
