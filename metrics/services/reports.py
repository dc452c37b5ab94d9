"""Latest-wins readings the platform reports about an entity (a student's health, a tutor's
availability), each reading as a whole: one conditional upsert per snapshot table, decided under the
row lock, so a late reading never overwrites a newer one."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from metrics.regions import region_label
from metrics.services.columns import STUDENT_TABLE, TUTOR_TABLE
from metrics.services.db import SnapshotTable, vendor_c


def order_key(e: dict[str, Any]) -> tuple[datetime, str]:
    """An event's place in event time: (timestamp, event_id), so ties cannot depend on arrival order."""
    return (datetime.fromisoformat(e["timestamp"]), e["event_id"])


def _latest(events: list[dict[str, Any]], event_type: str, key: str) -> dict[str, dict[str, Any]]:
    """The latest event per entity (the payload's `key`) by (event time, event_id)."""
    latest: dict[str, dict[str, Any]] = {}
    for e in events:
        if e["event_type"] != event_type:
            continue
        k = e["payload"][key]
        if k not in latest or order_key(e) > order_key(latest[k]):
            latest[k] = e
    return latest


def _newer_than_stored(at: str, event_id: str) -> str:
    """Latest wins by (event time, event_id): a late reading never overwrites a newer one."""
    return (
        f"{{t}}.{at} IS NULL OR ({{t}}.{at}, {vendor_c('{t}.' + event_id)}) "
        f"<= (excluded.{at}, {vendor_c('excluded.' + event_id)})"
    )


def _health_row(e: dict[str, Any]) -> dict[str, Any]:
    p = e["payload"]
    return {
        "platform_health_score": p.get("health_score"),
        "platform_churn_risk": p.get("churn_risk") or "",
        "platform_reported_at": datetime.fromisoformat(e["timestamp"]),
        "platform_event_id": e["event_id"],
    }


def _availability_row(e: dict[str, Any]) -> dict[str, Any]:
    p = e["payload"]
    tz = p.get("timezone") or ""
    return {
        "available_hours": p.get("available_hours_this_week"),
        "subjects": json.dumps(list(p.get("subjects") or [])),
        "timezone": tz,
        "region": region_label(tz),
        "accepts_instant_book": p.get("accepts_instant_book"),
        "availability_reported_at": datetime.fromisoformat(e["timestamp"]),
        "availability_event_id": e["event_id"],
    }


@dataclass(frozen=True)
class _Report:
    """One kind of reading: its event, the snapshot table it sets (keyed by the same id in the payload),
    the columns a reading sets, and the pair of columns that orders readings."""

    event_type: str
    table: SnapshotTable
    row: Callable[[dict[str, Any]], dict[str, Any]]
    at: str
    event_id: str

    def apply(self, events: list[dict[str, Any]], now: datetime) -> set[str]:
        """Write the batch's latest reading per entity where newer than the stored one; returns the
        entities whose reading was written."""
        key = self.table.key
        latest = _latest(events, self.event_type, key)
        written = self.table.upsert(
            [{key: k, **self.row(e)} for k, e in sorted(latest.items())],
            now,
            where=_newer_than_stored(self.at, self.event_id),
        )
        return {k for (k,) in written}


HEALTH = _Report(
    "customer_health_update", STUDENT_TABLE, _health_row, "platform_reported_at", "platform_event_id"
)
AVAILABILITY = _Report(
    "tutor_availability_updated",
    TUTOR_TABLE,
    _availability_row,
    "availability_reported_at",
    "availability_event_id",
)
