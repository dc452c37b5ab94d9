"""The platform's supply–demand readings per subject × region: every reading stored, and balance
status a hysteresis fold over a cell's readings in event-time order (a late reading is replayed into
place, so a rebuild equals live processing)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from iops.lib.sql import insert_ignore, update_rows
from metrics.models import SubjectRegionSnapshot, SupplyDemandReading
from metrics.services.cells import Cell, cell_rows
from metrics.services.reports import order_key

# Hysteresis for subject × region balance: enter a state at 1.5×, leave it only below 1.3×.
BALANCE_ENTER = 1.5
BALANCE_LEAVE = 1.3


class Reading(NamedTuple):
    """A SupplyDemandReading's columns as reported."""

    event_id: str
    subject: str
    region: str
    reported_at: datetime
    demand_score: float | None
    supply_score: float | None
    available_tutors: int | None
    active_students: int | None
    balance_status: str

    @classmethod
    def of(cls, e: dict[str, Any]) -> Reading:
        p = e["payload"]
        return cls(
            event_id=e["event_id"],
            subject=p["subject"],
            region=p["region"],
            reported_at=datetime.fromisoformat(e["timestamp"]),
            demand_score=p.get("demand_score"),
            supply_score=p.get("supply_score"),
            available_tutors=p.get("available_tutors"),
            active_students=p.get("active_students"),
            balance_status=p.get("balance_status") or "",
        )

    def order(self) -> tuple[datetime, str]:
        return (self.reported_at, self.event_id)


class FoldState(NamedTuple):
    """The cell's hysteresis state right after a reading, kept on the reading."""

    fold_status: str
    fold_since: datetime | None
    fold_ratio: float | None

    @classmethod
    def of(cls, snap: SubjectRegionSnapshot) -> FoldState:
        return cls(snap.balance_status, snap.status_since, snap.demand_supply_ratio)


_SNAPSHOT_FIELDS = [
    "platform_available_tutors",
    "platform_active_students",
    "platform_demand_score",
    "platform_supply_score",
    "platform_balance_status",
    "reported_at",
    "report_event_id",
    "demand_supply_ratio",
    "balance_status",
    "status_since",
    "updated_at",
]


class _Written:
    """What the batch's cells write: new readings with their state, stored readings restated."""

    def __init__(self) -> None:
        self.new: list[tuple] = []
        self.restated: list[SupplyDemandReading] = []


def apply_supply_demand(events: list[dict[str, Any]], now: datetime) -> set[Cell]:
    """Store every reading; balance status is a hysteresis fold over a cell's readings in event-time
    order. In-order readings step the stored state; a reading older than the latest replays the cell
    from the reading before it (_replay). Each reading keeps the state after it (fold_*).
    Returns the cells that had a reading."""
    by_cell: dict[Cell, list[Reading]] = {}
    for e in sorted((e for e in events if e["event_type"] == "supply_demand_update"), key=order_key):
        reading = Reading.of(e)
        by_cell.setdefault((reading.subject, reading.region), []).append(reading)
    if not by_cell:
        return set()
    snaps = cell_rows(set(by_cell), now)
    written = _Written()
    for cell, readings in sorted(by_cell.items()):
        _fold_cell(snaps[cell], readings, written)
        snaps[cell].updated_at = now
    insert_ignore(
        table=SupplyDemandReading._meta.db_table,
        columns=[*Reading._fields, *FoldState._fields],
        rows=written.new,
        conflict=["event_id"],
    )
    update_rows(model=SupplyDemandReading, key="event_id", fields=FoldState._fields, objs=written.restated)
    update_rows(
        model=SubjectRegionSnapshot,
        key="id",
        objs=[snaps[c] for c in sorted(by_cell)],
        fields=_SNAPSHOT_FIELDS,
    )
    return set(by_cell)


def _fold_cell(snap: SubjectRegionSnapshot, readings: list[Reading], written: _Written) -> None:
    """Step the cell through the batch's readings (replayed from before the earliest when it is late).
    A stored reading replayed is restated only when its state after it changed: a late reading that
    does not move the hysteresis rewrites nothing but itself."""
    batch = {r.event_id for r in readings}
    was: dict[str, FoldState] = {}
    if snap.reported_at is not None and readings[0].order() < (snap.reported_at, snap.report_event_id):
        readings, was = _replay(snap, readings)
    for reading in readings:
        _balance_step(snap, reading)
        state = FoldState.of(snap)
        if reading.event_id in batch:
            written.new.append((*reading, *state))
        elif was.get(reading.event_id) != state:
            written.restated.append(SupplyDemandReading(event_id=reading.event_id, **state._asdict()))


def _replay(
    snap: SubjectRegionSnapshot, readings: list[Reading]
) -> tuple[list[Reading], dict[str, FoldState]]:
    """A late reading: put the cell back into its state just before the batch's earliest reading
    (the fold state stored on the reading before it) and return every reading from there on, stored
    and new, in event-time order, with the state stored on each stored one. What is read is bounded by
    how late the reading is, not by the cell's history; only readings stored before fold states were
    kept replay the whole cell."""
    first_at = readings[0].reported_at
    stored = SupplyDemandReading.objects.filter(subject=snap.subject, region=snap.region)
    before = (
        stored.filter(reported_at__lt=first_at)
        .order_by("-reported_at", "-event_id")
        .values_list(*FoldState._fields)
        .first()
    )
    state = FoldState._make(before) if before is not None else None
    if state is not None and state.fold_status:
        snap.balance_status, snap.status_since, snap.demand_supply_ratio = state
        stored = stored.filter(reported_at__gte=first_at)
    else:
        _balance_reset(snap)
    width = len(Reading._fields)
    merged: dict[str, Reading] = {}
    was: dict[str, FoldState] = {}
    for row in stored.values_list(*Reading._fields, *FoldState._fields):
        reading = Reading._make(row[:width])
        merged[reading.event_id] = reading
        was[reading.event_id] = FoldState._make(row[width:])
    merged.update({r.event_id: r for r in readings})
    return sorted(merged.values(), key=Reading.order), was


def _balance_reset(snap: SubjectRegionSnapshot) -> None:
    snap.balance_status = "balanced"
    snap.status_since = None
    snap.demand_supply_ratio = None
    snap.reported_at = None
    snap.report_event_id = ""


def _balance_step(snap: SubjectRegionSnapshot, r: Reading) -> None:
    """Apply one reading in event-time order."""
    snap.platform_demand_score, snap.platform_supply_score = r.demand_score, r.supply_score
    snap.platform_available_tutors, snap.platform_active_students = r.available_tutors, r.active_students
    snap.platform_balance_status = r.balance_status or ""
    snap.reported_at, snap.report_event_id = r.reported_at, r.event_id
    if r.demand_score is None or r.supply_score is None:
        return
    ratio = (r.demand_score + 1) / (r.supply_score + 1)  # +1: a zero score does not divide by zero or explode
    snap.demand_supply_ratio = round(ratio, 3)
    status = snap.balance_status
    if status == "high_demand" and ratio < BALANCE_LEAVE:
        status = "balanced"
    elif status == "oversupplied" and ratio > 1 / BALANCE_LEAVE:
        status = "balanced"
    if status == "balanced":
        if ratio >= BALANCE_ENTER:
            status = "high_demand"
        elif ratio <= 1 / BALANCE_ENTER:
            status = "oversupplied"
    if status != snap.balance_status or snap.status_since is None:
        snap.status_since = r.reported_at
    snap.balance_status = status
