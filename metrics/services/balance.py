"""The platform's supply–demand readings per subject × region: every reading stored, and balance
status a hysteresis fold over a cell's readings in event-time order (a late reading is replayed into
place, so a rebuild equals live processing)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from django.db import connection

from iops.lib.sql import insert_ignore, update_rows
from metrics.models import SubjectRegionSnapshot, SupplyDemandReading
from metrics.services.cells import Cell, cell_rows
from metrics.services.db import select, vendor_c
from metrics.services.reports import order_key

# Hysteresis for subject × region balance: enter a state at 1.5×, leave it only below 1.3×.
BALANCE_ENTER = 1.5
BALANCE_LEAVE = 1.3
# A late reading reads the stored reading before it and at most this many after it: the fold is
# usually back on its stored states (converged) one or two readings later.
AROUND = 8


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
    order. In-order readings step the stored state; a cell with a reading older than its latest is
    stepped again around its late readings (_fold_late), or replayed from before the earliest
    (_replay) when that is not enough. Each reading keeps the state after it (fold_*).
    Returns the cells that had a reading."""
    by_cell: dict[Cell, list[Reading]] = {}
    for e in sorted((e for e in events if e["event_type"] == "supply_demand_update"), key=order_key):
        reading = Reading.of(e)
        by_cell.setdefault((reading.subject, reading.region), []).append(reading)
    if not by_cell:
        return set()
    snaps = cell_rows(set(by_cell), now)
    late = {
        cell: readings
        for cell, readings in by_cell.items()
        if snaps[cell].reported_at is not None
        and readings[0].order() < (snaps[cell].reported_at, snaps[cell].report_event_id)
    }
    # Only the readings older than their cell's latest need what is stored around them: one at or after
    # it follows the latest, which the snapshot holds (_fold_late).
    around = _around(
        [r for cell, readings in late.items() for r in readings if r.order() < _latest_order(snaps[cell])]
    )
    written = _Written()
    for cell, readings in sorted(by_cell.items()):
        snap = snaps[cell]
        if cell not in late:
            _step_all(snap, readings, written)
        elif not _fold_late(snap, readings, around, written):
            replayed, was = _replay(snap, readings)
            _step_all(snap, replayed, written, was=was, batch={r.event_id for r in readings})
        snap.updated_at = now
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


def _step_all(
    snap: SubjectRegionSnapshot,
    readings: list[Reading],
    written: _Written,
    *,
    was: dict[str, FoldState] | None = None,
    batch: set[str] | None = None,
) -> None:
    """Step the cell through readings in event-time order: the batch's are new (all of them when
    `batch` is None); a stored one is restated only when its state after it changed."""
    was = was or {}
    for reading in readings:
        _balance_step(snap, reading)
        state = FoldState.of(snap)
        if batch is None or reading.event_id in batch:
            written.new.append((*reading, *state))
        elif was.get(reading.event_id) != state:
            written.restated.append(SupplyDemandReading(event_id=reading.event_id, **state._asdict()))


class _Around(NamedTuple):
    """What is stored next to a late reading: the reading just before it (by time) with the state
    after it, and up to AROUND + 1 readings at or after its time with theirs."""

    before: tuple[Reading, FoldState] | None
    after: list[tuple[Reading, FoldState]]


def _around(late: list[Reading]) -> dict[str, _Around]:
    """_Around for each of these readings (by event id): one statement on PostgreSQL, two small
    indexed reads per reading elsewhere."""
    if not late:
        return {}
    found: dict[str, _Around] = {r.event_id: _Around(None, []) for r in late}
    width = len(Reading._fields)

    def add(eid: str, side: str, row: tuple) -> None:
        pair = (Reading._make(row[:width]), FoldState._make(row[width:]))
        if side == "b":
            found[eid] = found[eid]._replace(before=pair)
        else:
            found[eid].after.append(pair)

    columns = [*Reading._fields, *FoldState._fields]
    if connection.vendor == "postgresql":
        q = connection.ops.quote_name
        cols = ", ".join(f"x.{q(c)}" for c in columns)
        table = q(SupplyDemandReading._meta.db_table)
        event_id = vendor_c("x.event_id")
        source = "unnest(%s::varchar[], %s::varchar[], %s::varchar[], %s::timestamptz[]) AS b(eid, subject, region, at)"
        same_cell = "x.subject = b.subject AND x.region = b.region"
        sql = (
            f"SELECT b.eid, 'b', r.* FROM {source} CROSS JOIN LATERAL (SELECT {cols} FROM {table} AS x "  # noqa: S608 - model metadata
            f"WHERE {same_cell} AND x.reported_at < b.at ORDER BY x.reported_at DESC, {event_id} DESC LIMIT 1) r "
            f"UNION ALL SELECT b.eid, 'a', r.* FROM {source} CROSS JOIN LATERAL (SELECT {cols} FROM {table} AS x "
            f"WHERE {same_cell} AND x.reported_at >= b.at ORDER BY x.reported_at, {event_id} LIMIT %s) r"
        )
        arrays = [
            [r.event_id for r in late],
            [r.subject for r in late],
            [r.region for r in late],
            [r.reported_at for r in late],
        ]
        for eid, side, *row in select(sql, [*arrays, *arrays, AROUND + 1]):
            add(eid, side, tuple(row))
    else:
        for r in late:
            stored = SupplyDemandReading.objects.filter(subject=r.subject, region=r.region)
            before = (
                stored.filter(reported_at__lt=r.reported_at)
                .order_by("-reported_at", "-event_id")
                .values_list(*columns)
                .first()
            )
            if before is not None:
                add(r.event_id, "b", before)
            for row in (
                stored.filter(reported_at__gte=r.reported_at)
                .order_by("reported_at", "event_id")[: AROUND + 1]
                .values_list(*columns)
            ):
                add(r.event_id, "a", row)
    for a in found.values():
        a.after.sort(key=lambda pair: pair[0].order())
    return found


# The snapshot fields stepping a reading sets (kept to put back when the stored states stand).
_STEPPED = (
    "platform_demand_score",
    "platform_supply_score",
    "platform_available_tutors",
    "platform_active_students",
    "platform_balance_status",
    "reported_at",
    "report_event_id",
    "demand_supply_ratio",
    "balance_status",
    "status_since",
)


def _fold_late(
    snap: SubjectRegionSnapshot, readings: list[Reading], around: dict[str, _Around], written: _Written
) -> bool:
    """Step a cell with late readings using only the stored readings around them, without reading
    the cell's readings since the earliest one. The fold's next state depends only on the state
    before it (FoldState) and the reading, so once a stored reading's state comes out as stored
    (converged) every stored reading after it, up to the next new one, keeps its state; the stepping
    resumes at the next new reading from the state stored on the reading before it.
    False (nothing written, the snapshot as it was) when that is not enough: a stored reading without
    a state (stored before states were kept), or more than AROUND readings after a new one before
    the fold converges."""
    original = {name: getattr(snap, name) for name in _STEPPED}
    batch = {r.event_id for r in readings}
    # The stored readings known: around each new one, the one before it and those after it, so the
    # run from the reading before a new one to the last read after it is contiguous in the cell.
    known: dict[str, FoldState] = {}
    cut: set[str] = set()  # more readings are stored after these than were read
    stored: dict[str, Reading] = {}
    latest = _latest_reading(snap)
    for r in readings:
        a = around.get(r.event_id) or _Around((latest, FoldState.of(snap)), [])
        for reading, state in [*([a.before] if a.before else []), *a.after[:AROUND]]:
            stored[reading.event_id], known[reading.event_id] = reading, state
        if len(a.after) > AROUND:
            cut.add(a.after[AROUND - 1][0].event_id)
    new: list[tuple] = []
    restated: list[SupplyDemandReading] = []
    current = False  # the snapshot holds the state at this point of the walk
    last_stored: str | None = None  # the stored reading passed last
    for reading in sorted([*stored.values(), *readings], key=Reading.order):
        if reading.event_id in batch:
            if not current:  # resume from the state stored on the reading just before this one
                if last_stored is None:
                    _balance_reset(snap)  # the cell's first reading
                elif not known[last_stored].fold_status:
                    return _undo(snap, original)  # stored before states were kept
                else:
                    snap.balance_status, snap.status_since, snap.demand_supply_ratio = known[last_stored]
            _balance_step(snap, reading)
            new.append((*reading, *FoldState.of(snap)))
            current = True
            continue
        last_stored = reading.event_id
        if not current:
            continue  # before the first new reading, or after the fold converged: its state stands
        _balance_step(snap, reading)
        state = FoldState.of(snap)
        if state == known[reading.event_id]:
            current = False  # converged: this reading and those after it keep their states
            continue
        restated.append(SupplyDemandReading(event_id=reading.event_id, **state._asdict()))
        if reading.event_id in cut:
            return _undo(snap, original)  # not converged where the read ends: the readings after it move
    if not current:  # the latest stored reading's state stands: so does the snapshot
        for name, value in original.items():
            setattr(snap, name, value)
    written.new.extend(new)
    written.restated.extend(restated)
    return True


def _latest_order(snap: SubjectRegionSnapshot) -> tuple[datetime, str]:
    assert snap.reported_at is not None  # noqa: S101 - a late cell has a reading
    return (snap.reported_at, snap.report_event_id)


def _latest_reading(snap: SubjectRegionSnapshot) -> Reading:
    """The cell's latest stored reading as the snapshot holds it (stepping a reading copies it there)."""
    assert snap.reported_at is not None  # noqa: S101 - a late cell has a reading
    return Reading(
        event_id=snap.report_event_id,
        subject=snap.subject,
        region=snap.region,
        reported_at=snap.reported_at,
        demand_score=snap.platform_demand_score,
        supply_score=snap.platform_supply_score,
        available_tutors=snap.platform_available_tutors,
        active_students=snap.platform_active_students,
        balance_status=snap.platform_balance_status,
    )


def _undo(snap: SubjectRegionSnapshot, original: dict[str, Any]) -> bool:
    for name, value in original.items():
        setattr(snap, name, value)
    return False


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
