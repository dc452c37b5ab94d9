"""The aggregation step: fold a batch of new events into buckets, then refresh touched snapshots.

Cost grows with the entities a batch touches, not with history: one bulk upsert per bucket table,
one monotone upsert of first/last-session facts, and per snapshot table one read of window sums over
hour buckets and one upsert of the recomputed rows. Hot paths use plain tuples and raw statements,
not model instances.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Max, Q

from iops.lib.sql import insert_ignore, insert_returning_new, pg_execute, update_rows, upsert, upsert_add
from metrics.burnout import burnout_components, burnout_risk
from metrics.health import Evidence as HealthEvidence
from metrics.health import assess as health_assess
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
from metrics.regions import REGION_TIMEZONES, region_label
from metrics.selectors import data_coverage_start
from metrics.vocabulary import IB_REASONS
from metrics.windows import floor_hour, floor_minute, window_start

SESSION_VALUES = [
    "sessions_started",
    "sessions_completed",
    "sessions_unsuccessful",
    "rating_sum",
    "rating_count",
    "minutes",
]
IB_VALUES = ["ib_calls", "ib_unresolved", "ib_high_priority", *[f"ib_{r}" for r in IB_REASONS]]
HEALTH_VALUES = ["health_sum", "health_count"]
STUDENT_VALUES = SESSION_VALUES + IB_VALUES + HEALTH_VALUES
MINUTE_VALUES = [
    "received",
    "events",
    "sessions_started",
    "sessions_completed",
    "sessions_unsuccessful",
    "ib_calls",
]

# Hysteresis for subject × region balance: enter a state at 1.5×, leave it only below 1.3×.
BALANCE_ENTER = 1.5
BALANCE_LEAVE = 1.3

_CHUNK = 2000  # ids per snapshot statement


@dataclass
class Touched:
    students: set[str] = field(default_factory=set)
    tutors: set[str] = field(default_factory=set)
    subject_regions: set[tuple[str, str]] = field(default_factory=set)
    health_reported: set[str] = field(default_factory=set)
    first_sessions: set[str] = field(default_factory=set)
    # The refreshed snapshots' rule inputs, as written in this transaction (the alert rules read
    # these instead of the rows; absent when the batch did not refresh).
    student_views: dict[str, SimpleNamespace] | None = None
    tutor_views: dict[str, SimpleNamespace] | None = None

    def __bool__(self) -> bool:
        return bool(self.students or self.tutors or self.subject_regions)


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _chunks(values: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _vendor_c(column: str) -> str:
    """A text column compared byte-wise (as Python compares str) whatever the database's collation."""
    return f'{column} COLLATE "C"' if connection.vendor == "postgresql" else column


# The Session columns the fold reads and writes, in this order.
_SESSION_COLUMNS = (
    "id",
    "session_id",
    "student_id",
    "tutor_id",
    "subject",
    "session_type",
    "started_at",
    "started_event_id",
    "completed_at",
    "completed_event_id",
    "completed_successfully",
    "duration_minutes",
    "student_rating",
    "tutor_rating",
)


def _completion_values(s: SimpleNamespace) -> dict[str, int]:
    return {
        "sessions_completed": 1,
        "sessions_unsuccessful": 0 if s.completed_successfully else 1,
        "rating_sum": s.student_rating or 0,
        "rating_count": 1 if s.student_rating is not None else 0,
        "minutes": s.duration_minutes or 0,
    }


def _first_ok(s: SimpleNamespace) -> bool:
    """A first session went well: completed successfully and not rated 1 or 2."""
    return bool(s.completed_successfully) and (s.student_rating is None or s.student_rating > 2)


@dataclass
class _SessionOutcome:
    deltas: list[dict[str, Any]]
    completed: dict[str, SimpleNamespace]  # sessions whose winning completion changed, final state
    moved_students: set[str]  # students with a completion replaced by an earlier one


def _lock_sessions(ids: Sequence[str]) -> dict[str, SimpleNamespace]:
    """The stored Session rows of these ids, locked in session_id order (PostgreSQL; SQLite has one
    writer): concurrent workers cannot double count a session."""
    rows: dict[str, SimpleNamespace] = {}
    for chunk in _chunks(ids, 5000):
        if connection.vendor == "postgresql":
            q = connection.ops.quote_name
            where, params = _in_ids(q("session_id"), chunk)
            found = _select(
                f"SELECT {', '.join(q(c) for c in _SESSION_COLUMNS)} FROM {q(Session._meta.db_table)} "  # noqa: S608 - model metadata
                f"WHERE {where} ORDER BY {q('session_id')} FOR UPDATE",
                params,
            )
        else:
            found = (
                Session.objects.filter(session_id__in=chunk)
                .order_by("session_id")
                .values_list(*_SESSION_COLUMNS)
            )
        for values in found:
            s = SimpleNamespace(**dict(zip(_SESSION_COLUMNS, values, strict=True)))
            rows[s.session_id] = s
    return rows


def _new_session(p: dict[str, Any]) -> SimpleNamespace:
    s = SimpleNamespace(**dict.fromkeys(_SESSION_COLUMNS))
    s.session_id, s.student_id, s.tutor_id = p["session_id"], p["student_id"], p["tutor_id"]
    s.subject = s.session_type = s.started_event_id = s.completed_event_id = ""
    return s


_SESSION_WRITE = [
    "subject",
    "session_type",
    "started_at",
    "started_event_id",
    "completed_at",
    "completed_event_id",
    "completed_successfully",
    "duration_minutes",
    "student_rating",
    "tutor_rating",
]


def _session_deltas(events: list[dict[str, Any]]) -> _SessionOutcome:
    """Apply session events to Session rows (once per session_id) and return bucket deltas.

    A session's start and completion are each the earliest event by (event time, event_id), whatever
    the arrival order: a winner replaced by an earlier event moves its contribution (a negative delta
    in the old bucket, a positive one in the new), so incremental processing equals a rebuild.
    Stored sessions are locked and updated; sessions first seen are inserted once, with their values.
    """
    by_session: dict[str, list[tuple[datetime, str, dict[str, Any]]]] = {}
    for e in events:
        if e["event_type"] in ("session_started", "session_completed"):
            by_session.setdefault(e["payload"]["session_id"], []).append(
                (_ts(e["timestamp"]), e["event_id"], e)
            )
    outcome = _SessionOutcome([], {}, set())
    if not by_session:
        return outcome
    stored = _lock_sessions(sorted(by_session))
    fresh = {sid: _new_session(evs[0][2]["payload"]) for sid, evs in by_session.items() if sid not in stored}
    if fresh:
        fresh_outcome = _SessionOutcome([], {}, set())
        _apply_session_events(fresh, by_session, fresh_outcome)
        columns = ["session_id", "student_id", "tutor_id", *_SESSION_WRITE]
        inserted = set(
            insert_returning_new(
                table=Session._meta.db_table,
                columns=columns,
                rows=[tuple(getattr(s, c) for c in columns) for _, s in sorted(fresh.items())],
                conflict="session_id",
            )
        )
        if len(inserted) == len(fresh):
            outcome = fresh_outcome
        else:  # another worker created some of these a moment ago: apply ours to its rows instead
            stored.update(_lock_sessions(sorted(set(fresh) - inserted)))
            redo = {sid: _new_session(by_session[sid][0][2]["payload"]) for sid in inserted}
            _apply_session_events(redo, by_session, outcome)
    changed = _apply_session_events(stored, by_session, outcome)
    if changed:
        update_rows(model=Session, key="id", objs=changed, fields=_SESSION_WRITE)
    return outcome


def _apply_session_events(
    rows: dict[str, SimpleNamespace],
    by_session: dict[str, list[tuple[datetime, str, dict[str, Any]]]],
    outcome: _SessionOutcome,
) -> list[SimpleNamespace]:
    """Fold each session's events (in event-time order) into its row; deltas and completions go to
    `outcome`. Returns the rows that changed."""
    changed: list[SimpleNamespace] = []
    deltas = outcome.deltas
    for sid, s in sorted(rows.items()):
        touched = False
        for ts, event_id, e in sorted(by_session[sid], key=lambda t: (t[0], t[1])):
            p = e["payload"]
            key = (ts, event_id)
            if e["event_type"] == "session_started":
                if s.started_at is not None:
                    if key >= (s.started_at, s.started_event_id):
                        continue
                    deltas.append(
                        {
                            "student_id": s.student_id,
                            "tutor_id": s.tutor_id,
                            "ts": s.started_at,
                            "sessions_started": -1,
                        }
                    )
                s.started_at, s.started_event_id = ts, event_id
                s.session_type = p.get("session_type") or ""
                if p.get("subject"):
                    s.subject = p["subject"]  # the winning start names the subject
                deltas.append(
                    {"student_id": s.student_id, "tutor_id": s.tutor_id, "ts": ts, "sessions_started": 1}
                )
            else:
                if s.completed_at is not None:
                    if key >= (s.completed_at, s.completed_event_id):
                        continue
                    deltas.append(
                        {
                            "student_id": s.student_id,
                            "tutor_id": s.tutor_id,
                            "ts": s.completed_at,
                            **{k: -v for k, v in _completion_values(s).items()},
                        }
                    )
                    outcome.moved_students.add(s.student_id)
                s.completed_at, s.completed_event_id = ts, event_id
                s.completed_successfully = bool(p.get("completed_successfully", True))
                s.duration_minutes = p.get("actual_duration_minutes")
                s.student_rating = p.get("student_rating")
                s.tutor_rating = p.get("tutor_rating")
                if p.get("subject") and not s.subject:
                    s.subject = p["subject"]
                deltas.append(
                    {"student_id": s.student_id, "tutor_id": s.tutor_id, "ts": ts, **_completion_values(s)}
                )
                outcome.completed[sid] = s
            touched = True
        if touched:
            changed.append(s)
    return changed


def _fold_facts(outcome: _SessionOutcome) -> None:
    """Fold this batch's completions into each student's first/last-session facts.

    Completions only ever move earlier (the earliest event wins), so the first completed session —
    the least (completed_at, session_id) — only moves earlier, and one statement keeps it under the
    row lock, race-free: a candidate replaces the stored first when it is earlier or is the same
    session (its winning completion changed). The last completion only moves later, except when a
    completion is replaced by an earlier one: those (rare) students are recomputed from their sessions.
    """
    best: dict[str, SimpleNamespace] = {}
    last: dict[str, datetime] = {}
    for s in outcome.completed.values():
        b = best.get(s.student_id)
        if b is None or (s.completed_at, s.session_id) < (b.completed_at, b.session_id):
            best[s.student_id] = s
        if s.student_id not in last or s.completed_at > last[s.student_id]:
            last[s.student_id] = s.completed_at
    if best:
        table = "{t}"
        earlier = (
            f"{table}.first_completed_at IS NULL OR {table}.first_session_id = excluded.first_session_id "
            f"OR (excluded.first_completed_at, {_vendor_c('excluded.first_session_id')}) "
            f"< ({table}.first_completed_at, {_vendor_c(table + '.first_session_id')})"
        )
        upsert(
            table=StudentSessionFacts._meta.db_table,
            columns=["student_id", "first_completed_at", "first_session_id", "first_ok", "last_completed_at"],
            rows=[
                (sid, s.completed_at, s.session_id, _first_ok(s), last[sid])
                for sid, s in sorted(best.items())
            ],
            conflict=["student_id"],
            update={
                **{
                    c: f"CASE WHEN {earlier} THEN excluded.{c} ELSE {table}.{c} END"
                    for c in ("first_completed_at", "first_session_id", "first_ok")
                },
                "last_completed_at": (
                    f"CASE WHEN {table}.last_completed_at IS NULL OR excluded.last_completed_at > "
                    f"{table}.last_completed_at THEN excluded.last_completed_at ELSE {table}.last_completed_at END"
                ),
            },
        )
    if outcome.moved_students:
        latest = (
            Session.objects.filter(student_id__in=sorted(outcome.moved_students), completed_at__isnull=False)
            .values("student_id")
            .annotate(last=Max("completed_at"))
            .values_list("student_id", "last")
        )
        for student_id, at in latest:
            StudentSessionFacts.objects.filter(student_id=student_id).update(last_completed_at=at)


def _fold_buckets(deltas: list[dict[str, Any]], events: list[dict[str, Any]]) -> None:
    """Add the batch to the hour buckets (student, tutor) and the global minute series, one upsert each."""
    n_session = len(SESSION_VALUES)
    student: dict[tuple[str, datetime], list[int]] = {}
    tutor: dict[tuple[str, datetime], list[int]] = {}
    minute: dict[datetime, list[int]] = {}
    zero_student, zero_minute = [0] * len(STUDENT_VALUES), [0] * len(MINUTE_VALUES)
    m_started, m_completed, m_unsuccessful, m_ib = (
        MINUTE_VALUES.index(c)
        for c in ("sessions_started", "sessions_completed", "sessions_unsuccessful", "ib_calls")
    )
    for d in deltas:
        ts = d["ts"]
        hour = floor_hour(ts)
        srow = student.get((d["student_id"], hour))
        if srow is None:
            srow = student[(d["student_id"], hour)] = zero_student.copy()
        trow = tutor.get((d["tutor_id"], hour))
        if trow is None:
            trow = tutor[(d["tutor_id"], hour)] = [0] * n_session
        for i, col in enumerate(SESSION_VALUES):
            v = d.get(col)
            if v:
                srow[i] += v
                trow[i] += v
        mrow = minute.get(m := floor_minute(ts))
        if mrow is None:
            mrow = minute[m] = zero_minute.copy()
        mrow[m_started] += d.get("sessions_started", 0)
        mrow[m_completed] += d.get("sessions_completed", 0)
        mrow[m_unsuccessful] += d.get("sessions_unsuccessful", 0)
    ib_calls, ib_unresolved, ib_high = (
        STUDENT_VALUES.index(c) for c in ("ib_calls", "ib_unresolved", "ib_high_priority")
    )
    reason_col = {r: STUDENT_VALUES.index(f"ib_{r}") for r in IB_REASONS}
    health_sum, health_count = (STUDENT_VALUES.index(c) for c in HEALTH_VALUES)
    for e in events:
        received = floor_minute(_ts(e["received_at"]))
        row = minute.get(received)
        if row is None:
            row = minute[received] = zero_minute.copy()
        row[0] += 1  # received
        ts = _ts(e["timestamp"])
        row = minute.get(m := floor_minute(ts))
        if row is None:
            row = minute[m] = zero_minute.copy()
        row[1] += 1  # events
        if e["event_type"] == "customer_health_update":
            score = e["payload"].get("health_score")
            if score is not None:
                key = (e["payload"]["student_id"], floor_hour(ts))
                srow = student.get(key)
                if srow is None:
                    srow = student[key] = zero_student.copy()
                srow[health_sum] += round(float(score) * 100)  # hundredths: exact, order-free sums
                srow[health_count] += 1
            continue
        if e["event_type"] != "ib_call_logged":
            continue
        row[m_ib] += 1
        p = e["payload"]
        key = (p["student_id"], floor_hour(ts))
        srow = student.get(key)
        if srow is None:
            srow = student[key] = zero_student.copy()
        srow[ib_calls] += 1
        if p.get("resolved") == False:  # noqa: E712 - None means "not reported"
            srow[ib_unresolved] += 1
        if p.get("priority") == "high":
            srow[ib_high] += 1
        col = reason_col.get(p.get("reason", "other"))
        if col is not None:
            srow[col] += 1
    # Sorted rows: concurrent workers lock bucket rows in the same order.
    upsert_add(
        table=StudentHourly._meta.db_table,
        keys=["student_id", "hour"],
        values=STUDENT_VALUES,
        rows=[(*k, *v) for k, v in sorted(student.items())],
    )
    upsert_add(
        table=TutorHourly._meta.db_table,
        keys=["tutor_id", "hour"],
        values=SESSION_VALUES,
        rows=[(*k, *v) for k, v in sorted(tutor.items())],
    )
    upsert_add(
        table=GlobalMinute._meta.db_table,
        keys=["minute"],
        values=MINUTE_VALUES,
        rows=[(k, *v) for k, v in sorted(minute.items())],
    )


def _order_key(e: dict[str, Any]) -> tuple[datetime, str]:
    return (_ts(e["timestamp"]), e["event_id"])


def _latest(events: list[dict[str, Any]], event_type: str, key) -> dict[Any, dict[str, Any]]:
    """The latest event per key by (event time, event_id): ties cannot depend on arrival order."""
    latest: dict[Any, dict[str, Any]] = {}
    for e in events:
        if e["event_type"] != event_type:
            continue
        k = key(e["payload"])
        if k not in latest or _order_key(e) > _order_key(latest[k]):
            latest[k] = e
    return latest


# Every NOT NULL column without a database default, for a snapshot row inserted by any upsert.
_STUDENT_INSERT = {
    "ib_reasons_14d": "{}",
    "health_components": "{}",
    "prior_weekly_mean": 0.0,
    "velocity_trend": "",
    "platform_churn_risk": "",
    "platform_event_id": "",
    "first_session_id": "",
    **dict.fromkeys(
        (
            "sessions_7d",
            "sessions_14d",
            "sessions_30d",
            "sessions_started_7d",
            "sessions_started_30d",
            "unsuccessful_30d",
            "ib_calls_7d",
            "ib_calls_14d",
            "ib_calls_30d",
            "ib_unresolved_14d",
            "ib_high_priority_14d",
            "rated_sessions_30d",
        ),
        0,
    ),
}
_TUTOR_INSERT = {
    "subjects": "[]",
    "timezone": "",
    "availability_event_id": "",
    "region": "",
    "burnout_components": "{}",
    "prior_weekly_mean": 0.0,
    "hours_taught_7d": 0.0,
    **dict.fromkeys(
        (
            "sessions_7d",
            "sessions_14d",
            "sessions_30d",
            "sessions_started_30d",
            "unsuccessful_30d",
            "rated_sessions",
        ),
        0,
    ),
}


def _snapshot_upsert(
    *,
    model,
    key: str,
    insert_defaults: dict[str, Any],
    columns: list[str],
    rows: list[tuple],
    now: datetime,
    where: str = "",
) -> list[tuple]:
    """Upsert snapshot rows (key + `columns`): a missing row is created with the insert defaults,
    an existing one gets `columns` set (only where `where` holds). Returns the keys written."""
    if not rows:
        return []
    extra = [c for c in ("as_of", "updated_at", *insert_defaults) if c not in columns]
    fill = tuple(now if c in ("as_of", "updated_at") else insert_defaults[c] for c in extra)
    return upsert(
        table=model._meta.db_table,
        columns=[key, *columns, *extra],
        rows=[(*row, *fill) for row in rows],
        conflict=[key],
        update=columns,
        where=where,
        returning=[key],
    )


def _ensure_snapshots(students: set[str], tutors: set[str], now: datetime) -> None:
    """Rows for entities first seen, when the batch does not refresh them (the rebuild)."""
    for model, key, ids, defaults in (
        (StudentSnapshot, "student_id", students, _STUDENT_INSERT),
        (TutorSnapshot, "tutor_id", tutors, _TUTOR_INSERT),
    ):
        columns = [key, "as_of", "updated_at", *defaults]
        fill = (now, now, *defaults.values())
        insert_ignore(
            table=model._meta.db_table,
            columns=columns,
            rows=[(i, *fill) for i in sorted(ids)],
            conflict=[key],
        )


def _newer_than_stored(at: str, event_id: str) -> str:
    """Latest wins by (event time, event_id): a late reading never overwrites a newer one."""
    return (
        f"{{t}}.{at} IS NULL OR ({{t}}.{at}, {_vendor_c('{t}.' + event_id)}) "
        f"<= (excluded.{at}, {_vendor_c('excluded.' + event_id)})"
    )


def _apply_reports(events: list[dict[str, Any]], now: datetime, touched: Touched) -> None:
    """Latest-wins readings the platform reports (health, availability), each reading as a whole:
    one conditional upsert per table, decided under the row lock."""
    health = _latest(events, "customer_health_update", lambda p: p["student_id"])
    if health:
        rows = []
        for student_id, e in sorted(health.items()):
            p = e["payload"]
            rows.append(
                (
                    student_id,
                    p.get("health_score"),
                    p.get("churn_risk") or "",
                    _ts(e["timestamp"]),
                    e["event_id"],
                )
            )
        applied = _snapshot_upsert(
            model=StudentSnapshot,
            key="student_id",
            insert_defaults=_STUDENT_INSERT,
            columns=[
                "platform_health_score",
                "platform_churn_risk",
                "platform_reported_at",
                "platform_event_id",
            ],
            rows=rows,
            now=now,
            where=_newer_than_stored("platform_reported_at", "platform_event_id"),
        )
        touched.health_reported.update(applied)
    availability = _latest(events, "tutor_availability_updated", lambda p: p["tutor_id"])
    if availability:
        rows = []
        for tutor_id, e in sorted(availability.items()):
            p = e["payload"]
            tz = p.get("timezone") or ""
            rows.append(
                (
                    tutor_id,
                    p.get("available_hours_this_week"),
                    json.dumps(list(p.get("subjects") or [])),
                    tz,
                    region_label(tz),
                    p.get("accepts_instant_book"),
                    _ts(e["timestamp"]),
                    e["event_id"],
                )
            )
        _snapshot_upsert(
            model=TutorSnapshot,
            key="tutor_id",
            insert_defaults=_TUTOR_INSERT,
            columns=[
                "available_hours",
                "subjects",
                "timezone",
                "region",
                "accepts_instant_book",
                "availability_reported_at",
                "availability_event_id",
            ],
            rows=rows,
            now=now,
            where=_newer_than_stored("availability_reported_at", "availability_event_id"),
        )
    _apply_supply_demand(events, now, touched)


def _reading_row(e: dict[str, Any]) -> tuple:
    p = e["payload"]
    return (
        e["event_id"],
        p["subject"],
        p["region"],
        _ts(e["timestamp"]),
        p.get("demand_score"),
        p.get("supply_score"),
        p.get("available_tutors"),
        p.get("active_students"),
        p.get("balance_status") or "",
    )


_READING_COLUMNS = (
    "event_id",
    "subject",
    "region",
    "reported_at",
    "demand_score",
    "supply_score",
    "available_tutors",
    "active_students",
    "balance_status",
)
_FOLD_COLUMNS = ("fold_status", "fold_since", "fold_ratio")


def _replay_rows(snap: SubjectRegionSnapshot, cell: tuple[str, str], rows: list[tuple]) -> list[tuple]:
    """A late reading: put the cell back into its state just before the batch's earliest reading
    (the fold state stored on the reading before it) and return every reading from there on, stored
    and new, in event-time order. What is read is bounded by how late the reading is, not by the
    cell's history; only readings stored before fold states were kept replay the whole cell."""
    first_at = rows[0][3]
    readings = SupplyDemandReading.objects.filter(subject=cell[0], region=cell[1])
    before = (
        readings.filter(reported_at__lt=first_at)
        .order_by("-reported_at", "-event_id")
        .values_list(*_FOLD_COLUMNS)
        .first()
    )
    if before is not None and before[0]:
        snap.balance_status, snap.status_since, snap.demand_supply_ratio = before
        readings = readings.filter(reported_at__gte=first_at)
    else:
        _balance_reset(snap)
    merged = {r[0]: r for r in readings.values_list(*_READING_COLUMNS)}
    merged.update({r[0]: r for r in rows})
    return sorted(merged.values(), key=lambda r: (r[3], r[0]))


def _apply_supply_demand(events: list[dict[str, Any]], now: datetime, touched: Touched) -> None:
    """Store every reading; balance status is a hysteresis fold over a cell's readings in event-time
    order. In-order readings step the stored state; a reading older than the latest replays the cell
    from the reading before it (_replay_rows). Each reading keeps the state after it (fold_*)."""
    readings = sorted((e for e in events if e["event_type"] == "supply_demand_update"), key=_order_key)
    if not readings:
        return
    by_cell: dict[tuple[str, str], list[tuple]] = {}
    for e in readings:
        row = _reading_row(e)
        by_cell.setdefault((row[1], row[2]), []).append(row)
    snaps = _subject_region_rows(set(by_cell), now)
    new_rows: list[tuple] = []
    restated: list[SupplyDemandReading] = []
    for cell, rows in sorted(by_cell.items()):
        snap = snaps[cell]
        batch = {r[0] for r in rows}
        if snap.reported_at is not None and (rows[0][3], rows[0][0]) < (
            snap.reported_at,
            snap.report_event_id,
        ):
            rows = _replay_rows(snap, cell, rows)
        for row in rows:
            _balance_step(snap, row)
            state = (snap.balance_status, snap.status_since, snap.demand_supply_ratio)
            if row[0] in batch:
                new_rows.append((*row, *state))
            else:
                restated.append(
                    SupplyDemandReading(event_id=row[0], **dict(zip(_FOLD_COLUMNS, state, strict=True)))
                )
        snap.updated_at = now
        touched.subject_regions.add(cell)
    insert_ignore(
        table=SupplyDemandReading._meta.db_table,
        columns=[*_READING_COLUMNS, *_FOLD_COLUMNS],
        rows=new_rows,
        conflict=["event_id"],
    )
    update_rows(model=SupplyDemandReading, key="event_id", fields=_FOLD_COLUMNS, objs=restated)
    update_rows(
        model=SubjectRegionSnapshot,
        key="id",
        objs=[snaps[c] for c in sorted(by_cell)],
        fields=[
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
        ],
    )


def _subject_region_rows(
    cells: set[tuple[str, str]], now: datetime
) -> dict[tuple[str, str], SubjectRegionSnapshot]:
    insert_ignore(
        table=SubjectRegionSnapshot._meta.db_table,
        columns=[
            "subject",
            "region",
            "platform_balance_status",
            "report_event_id",
            "balance_status",
            "active_students",
            "available_tutors",
            "available_hours",
            "sessions_7d",
            "updated_at",
        ],
        rows=[(s, r, "", "", "balanced", 0, 0, 0.0, 0, now) for s, r in sorted(cells)],
        conflict=["subject", "region"],
    )
    subjects = {s for s, _ in cells}
    regions = {r for _, r in cells}
    return {
        (snap.subject, snap.region): snap
        for snap in SubjectRegionSnapshot.objects.filter(subject__in=subjects, region__in=regions)
        if (snap.subject, snap.region) in cells
    }


def _balance_reset(snap: SubjectRegionSnapshot) -> None:
    snap.balance_status = "balanced"
    snap.status_since = None
    snap.demand_supply_ratio = None
    snap.reported_at = None
    snap.report_event_id = ""


def _balance_step(snap: SubjectRegionSnapshot, row: tuple) -> None:
    """Apply one reading (a SupplyDemandReading row tuple) in event-time order."""
    event_id, _, _, ts, demand, supply, tutors, students, status_reported = row
    snap.platform_demand_score, snap.platform_supply_score = demand, supply
    snap.platform_available_tutors, snap.platform_active_students = tutors, students
    snap.platform_balance_status = status_reported or ""
    snap.reported_at, snap.report_event_id = ts, event_id
    if demand is None or supply is None:
        return
    ratio = (demand + 1) / (supply + 1)  # +1: a zero score does not divide by zero or explode
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
        snap.status_since = ts
    snap.balance_status = status


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
    outcome = _session_deltas(events)
    _fold_buckets(outcome.deltas, events)
    _fold_facts(outcome)
    if not refresh:
        _ensure_snapshots(touched.students, touched.tutors, now)
    _apply_reports(events, now, touched)
    touched.first_sessions = {s.student_id for s in outcome.completed.values()}
    if refresh:
        touched.student_views, touched.tutor_views = snapshots_refresh(
            students=touched.students, tutors=touched.tutors, now=now
        )
    return touched


def _select(sql: str, params: list[Any]) -> list[tuple]:
    """A read with `%s` placeholders: bound on the server in binary on PostgreSQL (an array of ids is
    one parameter, not thousands of quoted literals), through Django's cursor on SQLite."""
    if connection.vendor == "postgresql":
        return pg_execute(sql.replace("%s", "%b"), params, fetch=True)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _in_ids(column: str, ids: Sequence[str]) -> tuple[str, list[Any]]:
    """`column` is one of `ids`: one array parameter on PostgreSQL, a placeholder list on SQLite."""
    if connection.vendor == "postgresql":
        return f"{column} = ANY(%s::varchar[])", [list(ids)]
    return f"{column} IN ({', '.join(['%s'] * len(ids))})", list(ids)


def _rows_by_id(model, key: str, ids: Sequence[str], columns: Sequence[str]) -> dict[str, tuple]:
    """{id: (columns…)} for the rows of these ids."""
    if connection.vendor != "postgresql":
        return {r[0]: r[1:] for r in model.objects.filter(**{f"{key}__in": ids}).values_list(key, *columns)}
    q = connection.ops.quote_name
    where, params = _in_ids(q(key), ids)
    sql = f"SELECT {q(key)}, {', '.join(q(c) for c in columns)} FROM {q(model._meta.db_table)} WHERE {where}"  # noqa: S608 - model metadata
    return {r[0]: r[1:] for r in _select(sql, params)}


def _window_sums(
    model,
    key: str,
    ids: Sequence[str],
    fields: dict[str, tuple[str, int]],
    now: datetime,
    *,
    first_hour: bool = False,
) -> dict[str, tuple[Any, ...]]:
    """{id: sums in the order of `fields`} for each name -> (column, days) over hour buckets, one query;
    with `first_hour`, the earliest bucket in the widest window last."""
    q = connection.ops.quote_name
    adapt = connection.ops.adapt_datetimefield_value
    oldest = max(days for _, days in fields.values())
    sums, params = [], []
    for column, days in fields.values():
        sums.append(f"SUM(CASE WHEN {q('hour')} >= %s THEN {q(column)} ELSE 0 END)")
        params.append(adapt(window_start(now, days)))
    if first_hour:
        sums.append(f"MIN({q('hour')})")
    where, id_params = _in_ids(q(key), ids)
    sql = (
        f"SELECT {q(key)}, {', '.join(sums)} FROM {q(model._meta.db_table)} "  # noqa: S608 - model metadata
        f"WHERE {where} AND {q('hour')} >= %s AND {q('hour')} <= %s GROUP BY {q(key)}"
    )
    rows = _select(sql, [*params, *id_params, adapt(window_start(now, oldest)), adapt(now)])
    if first_hour and connection.vendor != "postgresql":  # SQLite answers MIN(hour) as text
        return {row[0]: (*row[1:-1], _as_datetime(row[-1])) for row in rows}
    return {row[0]: row[1:] for row in rows}  # every SUM has an ELSE 0: never NULL


def _as_datetime(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


STUDENT_WINDOWS = {
    "sessions_7d": ("sessions_completed", 7),
    "sessions_14d": ("sessions_completed", 14),
    "sessions_30d": ("sessions_completed", 30),
    "sessions_28d": ("sessions_completed", 28),
    "sessions_started_7d": ("sessions_started", 7),
    "sessions_started_30d": ("sessions_started", 30),
    "unsuccessful_30d": ("sessions_unsuccessful", 30),
    "ib_calls_7d": ("ib_calls", 7),
    "ib_calls_14d": ("ib_calls", 14),
    "ib_calls_30d": ("ib_calls", 30),
    "ib_unresolved_14d": ("ib_unresolved", 14),
    "ib_high_priority_14d": ("ib_high_priority", 14),
    "rating_sum_30d": ("rating_sum", 30),
    "rating_count_30d": ("rating_count", 30),
    **{f"ib_{r}_14d": (f"ib_{r}", 14) for r in IB_REASONS},
    "health_sum_30d": ("health_sum", 30),
    "health_count_30d": ("health_count", 30),
    "health_sum_7d": ("health_sum", 7),
    "health_count_7d": ("health_count", 7),
}
TUTOR_WINDOWS = {
    "sessions_7d": ("sessions_completed", 7),
    "sessions_14d": ("sessions_completed", 14),
    "sessions_30d": ("sessions_completed", 30),
    "sessions_started_30d": ("sessions_started", 30),
    "unsuccessful_30d": ("sessions_unsuccessful", 30),
    "rating_sum_30d": ("rating_sum", 30),
    "rating_count_30d": ("rating_count", 30),
    "rating_sum_7d": ("rating_sum", 7),
    "rating_count_7d": ("rating_count", 7),
    "sessions_28d": ("sessions_completed", 28),
    "minutes_7d": ("minutes", 7),
}
_NO_SUMS_STUDENT = (0,) * len(STUDENT_WINDOWS)
_NO_SUMS_TUTOR = (0,) * len(TUTOR_WINDOWS)


def velocity_trend(velocity: float | None, prior_weekly_mean: float, sessions_7d: int) -> str:
    if prior_weekly_mean <= 0:
        return "new" if sessions_7d > 0 else ""
    if velocity is None:
        return ""
    if velocity >= 1.25:
        return "rising"
    if velocity <= 0.75:
        return "falling"
    return "steady"


def snapshots_refresh(
    *, students: set[str] | list[str], tutors: set[str] | list[str], now: datetime
) -> tuple[dict[str, SimpleNamespace], dict[str, SimpleNamespace]]:
    """Recompute the windowed part of snapshots for these entities as of `now` (windows decay),
    creating missing rows. Returns each entity's alert-rule inputs as written."""
    return _refresh_students(sorted(students), now), _refresh_tutors(sorted(tutors), now)


# The student snapshot columns a refresh writes, in the order of _student_row's values.
STUDENT_REFRESH_FIELDS = [
    "sessions_7d",
    "sessions_14d",
    "sessions_30d",
    "sessions_started_7d",
    "sessions_started_30d",
    "unsuccessful_30d",
    "ib_calls_7d",
    "ib_calls_14d",
    "ib_calls_30d",
    "ib_unresolved_14d",
    "ib_high_priority_14d",
    "ib_reasons_14d",
    "rated_sessions_30d",
    "avg_rating_given",
    "prior_weekly_mean",
    "velocity",
    "velocity_trend",
    "last_session_at",
    "days_since_last_session",
    "first_session_at",
    "first_session_id",
    "first_session_ok",
    "platform_health_baseline",
    "observed_since",
    "health_components",
    "health_score",
    "as_of",
    "updated_at",
]
_SW = {name: i for i, name in enumerate(STUDENT_WINDOWS)}
_IB_REASON_WINDOWS = [(r, _SW[f"ib_{r}_14d"]) for r in IB_REASONS]


def _platform_baseline(w: tuple, latest: float | None, latest_at, now) -> float | None:
    """Mean of the student's platform readings from 8 to 30 days ago (the latest one left out): what
    the platform usually said of them, before whatever is happening this week."""
    hundredths = int(w[_SW["health_sum_30d"]]) - int(w[_SW["health_sum_7d"]])
    count = int(w[_SW["health_count_30d"]]) - int(w[_SW["health_count_7d"]])
    if (
        latest is not None
        and latest_at is not None
        and window_start(now, 30) <= latest_at < window_start(now, 7)
    ):
        hundredths, count = hundredths - round(latest * 100), count - 1
    return round(hundredths / count / 100, 1) if count > 0 else None


def _refresh_students(ids: list[str], now: datetime) -> dict[str, SimpleNamespace]:
    views: dict[str, SimpleNamespace] = {}
    coverage: list[datetime | None] = []  # read once, and only for a student whose first session went badly

    def known_first(first_at: datetime | None, first_ok: bool | None) -> bool:
        """Only a session after a full look-back of our own data is known to be a student's first."""
        if first_at is None or first_ok is not False:
            return False
        if not coverage:
            coverage.append(data_coverage_start())
        return bool(coverage[0] and first_at >= coverage[0] + lookback)

    min_history = settings.HEALTH_MIN_HISTORY_DAYS
    lookback = timedelta(days=settings.FIRST_SESSION_LOOKBACK_DAYS)
    for chunk in _chunks(ids):
        sums = _window_sums(StudentHourly, "student_id", chunk, STUDENT_WINDOWS, now, first_hour=True)
        facts = _rows_by_id(
            StudentSessionFacts,
            "student_id",
            chunk,
            ("first_completed_at", "first_session_id", "first_ok", "last_completed_at"),
        )
        current = _rows_by_id(
            StudentSnapshot,
            "student_id",
            chunk,
            (
                "first_session_at",
                "first_session_id",
                "first_session_ok",
                "platform_health_score",
                "platform_churn_risk",
                "platform_reported_at",
            ),
        )
        # A completion stamped after `now` (clock skew) is not shown yet: the latest one up to now.
        ahead = sorted(sid for sid, f in facts.items() if f[3] is not None and f[3] > now)
        last_until_now = (
            dict(
                Session.objects.filter(student_id__in=ahead, completed_at__lte=now)
                .values("student_id")
                .annotate(last=Max("completed_at"))
                .values_list("student_id", "last")
            )
            if ahead
            else {}
        )
        rows = []
        for sid in chunk:
            w = sums.get(sid)
            observed_since = w[-1] if w is not None else None
            w = w or _NO_SUMS_STUDENT
            sessions_7d, sessions_14d, sessions_30d, sessions_28d = w[0], w[1], w[2], w[3]
            started_7d, started_30d, unsuccessful_30d = w[4], w[5], w[6]
            ib_7d, ib_14d, ib_30d, ib_unresolved, ib_high, rating_sum, rated = w[7:14]
            reasons = {r: w[i] for r, i in _IB_REASON_WINDOWS if w[i]}
            avg_rating = round(rating_sum / rated, 2) if rated else None
            prior = (sessions_28d - sessions_7d) / 3
            velocity = round(sessions_7d / prior, 3) if prior > 0 else None
            f = facts.get(sid)
            last = None if f is None else (f[3] if f[3] is None or f[3] <= now else last_until_now.get(sid))
            days_since = round((now - last).total_seconds() / 86400, 2) if last else None
            cur = current.get(sid, (None, "", None, None, "", None))
            if f is not None and f[0] is not None and f[0] <= now:
                first_at, first_id, first_ok = f[0], f[1], f[2]
            else:  # no completed session up to now: keep what the snapshot shows
                first_at, first_id, first_ok = cur[0], cur[1], cur[2]
            baseline = _platform_baseline(w, cur[3], cur[5], now)
            assessment = health_assess(
                HealthEvidence(
                    observed_days=(now - observed_since).total_seconds() / 86400 if observed_since else None,
                    sessions_7d=sessions_7d,
                    prior_weekly_mean=prior,
                    days_since_last_session=days_since,
                    ib_calls_7d=ib_7d,
                    ib_calls_30d=ib_30d,
                    ib_unresolved_14d=ib_unresolved,
                    ib_high_priority_14d=ib_high,
                    avg_rating_given=avg_rating,
                    rated_sessions_30d=rated,
                    unsuccessful_30d=unsuccessful_30d,
                    first_session_ok=first_ok,
                    first_session_known=known_first(first_at, first_ok),
                    days_since_first_session=(now - first_at).total_seconds() / 86400 if first_at else None,
                    platform_health=cur[3],
                    platform_baseline=baseline,
                ),
                min_history_days=min_history,
            )
            components = assessment.components
            prior_weekly_mean = round(prior, 3)
            rows.append(
                (
                    sid,
                    sessions_7d,
                    sessions_14d,
                    sessions_30d,
                    started_7d,
                    started_30d,
                    unsuccessful_30d,
                    ib_7d,
                    ib_14d,
                    ib_30d,
                    ib_unresolved,
                    ib_high,
                    json.dumps(reasons),
                    rated,
                    avg_rating,
                    prior_weekly_mean,
                    velocity,
                    velocity_trend(velocity, prior, sessions_7d),
                    last,
                    days_since,
                    first_at,
                    first_id,
                    first_ok,
                    baseline,
                    observed_since,
                    json.dumps(components),
                    assessment.score,
                    now,
                    now,
                )
            )
            # The rule inputs: every column the refresh wrote (JSON as objects) and the platform reading.
            view = SimpleNamespace(**dict(zip(STUDENT_REFRESH_FIELDS, rows[-1][1:], strict=True)))
            view.student_id, view.ib_reasons_14d, view.health_components = sid, reasons, components
            view.platform_health_score, view.platform_churn_risk = cur[3], cur[4]
            views[sid] = view
        _snapshot_upsert(
            model=StudentSnapshot,
            key="student_id",
            insert_defaults=_STUDENT_INSERT,
            columns=STUDENT_REFRESH_FIELDS,
            rows=rows,
            now=now,
        )
    return views


TUTOR_REFRESH_FIELDS = [
    "sessions_7d",
    "sessions_14d",
    "sessions_30d",
    "sessions_started_30d",
    "unsuccessful_30d",
    "rated_sessions",
    "avg_rating",
    "completion_rate",
    "hours_taught_7d",
    "utilisation",
    "avg_rating_7d",
    "avg_rating_prior",
    "prior_weekly_mean",
    "burnout_components",
    "burnout_risk",
    "as_of",
    "updated_at",
]


def _refresh_tutors(ids: list[str], now: datetime) -> dict[str, SimpleNamespace]:
    views: dict[str, SimpleNamespace] = {}
    for chunk in _chunks(ids):
        sums = _window_sums(TutorHourly, "tutor_id", chunk, TUTOR_WINDOWS, now)
        hours = {
            k: v[0] for k, v in _rows_by_id(TutorSnapshot, "tutor_id", chunk, ("available_hours",)).items()
        }
        rows = []
        for tid in chunk:
            w = sums.get(tid, _NO_SUMS_TUTOR)
            (
                sessions_7d,
                sessions_14d,
                sessions_30d,
                started_30d,
                unsuccessful_30d,
                rating_sum_30d,
                rated,
                rating_sum_7d,
                rated_7d,
                sessions_28d,
                minutes_7d,
            ) = w
            available = hours.get(tid)
            # Mean of rated sessions only (the prototype divided by all sessions and started at 0).
            avg_rating = round(rating_sum_30d / rated, 2) if rated else None
            completion_rate = (
                round((sessions_30d - unsuccessful_30d) / sessions_30d, 3) if sessions_30d else None
            )
            hours_taught_7d = round(minutes_7d / 60, 2)
            utilisation = round(hours_taught_7d / available, 3) if available else None
            rated_prior = rated - rated_7d
            avg_rating_7d = round(rating_sum_7d / rated_7d, 2) if rated_7d else None
            avg_rating_prior = (
                round((rating_sum_30d - rating_sum_7d) / rated_prior, 2) if rated_prior else None
            )
            prior_weekly_mean = round((sessions_28d - sessions_7d) / 3, 3)
            components = burnout_components(
                utilisation=utilisation,
                avg_rating_7d=avg_rating_7d,
                rated_7d=rated_7d,
                avg_rating_prior=avg_rating_prior,
                rated_prior=rated_prior,
                sessions_7d=sessions_7d,
                prior_weekly_mean=prior_weekly_mean,
            )
            # No sessions and no availability: nothing to judge load by.
            active = sessions_30d or started_30d or available
            risk = burnout_risk(components) if active else None
            rows.append(
                (
                    tid,
                    sessions_7d,
                    sessions_14d,
                    sessions_30d,
                    started_30d,
                    unsuccessful_30d,
                    rated,
                    avg_rating,
                    completion_rate,
                    hours_taught_7d,
                    utilisation,
                    avg_rating_7d,
                    avg_rating_prior,
                    prior_weekly_mean,
                    json.dumps(components),
                    risk,
                    now,
                    now,
                )
            )
            view = SimpleNamespace(**dict(zip(TUTOR_REFRESH_FIELDS, rows[-1][1:], strict=True)))
            view.tutor_id, view.available_hours, view.burnout_components = tid, available, components
            views[tid] = view
        _snapshot_upsert(
            model=TutorSnapshot,
            key="tutor_id",
            insert_defaults=_TUTOR_INSERT,
            columns=TUTOR_REFRESH_FIELDS,
            rows=rows,
            now=now,
        )
    return views


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


def retention_horizon(now: datetime) -> datetime:
    return now - timedelta(days=settings.EVENT_RETENTION_DAYS)


def subject_regions_refresh(*, now: datetime) -> int:
    """Our own demand/supply figures per subject × region, from sessions and tutor availability.

    Pools are (subject, tutor timezone): a session belongs to its tutor's timezone (students carry no
    region), a region reads the pool of its timezone. Demand = distinct students with a session
    started or completed in 7 days; supply = tutors whose latest availability lists the subject with
    hours > 0, scaled by the marketplace's students per available tutor. own_ratio =
    (students + 1) / (tutors × norm + 1): 1 is a typical load, 1.5 is 50 % more students per tutor.
    """
    cut = window_start(now, 7)
    tutor_tz: dict[str, str] = {}
    supply: dict[tuple[str, str], list[float]] = {}
    for tutor_id, tz, hours, subjects in TutorSnapshot.objects.exclude(timezone="").values_list(
        "tutor_id", "timezone", "available_hours", "subjects"
    ):
        tutor_tz[tutor_id] = tz
        if hours and hours > 0:
            for subject in set(subjects or []):
                supply.setdefault((subject, tz), []).append(float(hours))
    students: dict[tuple[str, str], set[str]] = {}
    sessions: dict[tuple[str, str], int] = {}
    recent = Session.objects.filter(
        Q(started_at__gte=cut, started_at__lte=now) | Q(completed_at__gte=cut, completed_at__lte=now)
    ).exclude(subject="")
    for subject, tutor_id, student_id in recent.values_list("subject", "tutor_id", "student_id").iterator(
        chunk_size=5000
    ):
        tz = tutor_tz.get(tutor_id)
        if tz is None:
            continue  # region unknown until the tutor reports a timezone
        students.setdefault((subject, tz), set()).add(student_id)
        sessions[(subject, tz)] = sessions.get((subject, tz), 0) + 1
    total_tutors = sum(len(v) for v in supply.values())
    norm = sum(len(v) for v in students.values()) / total_tutors if total_tutors else 0.0
    pools = set(supply) | set(students)
    cells = {
        (subject, region) for subject, tz in pools for region, zone in REGION_TIMEZONES.items() if zone == tz
    }
    existing = set(SubjectRegionSnapshot.objects.values_list("subject", "region"))
    if cells - existing:
        _subject_region_rows(cells - existing, now)
    snaps = list(SubjectRegionSnapshot.objects.all())
    for snap in snaps:
        tz = REGION_TIMEZONES.get(snap.region)
        pool = (snap.subject, tz) if tz else None
        snap.active_students = len(students.get(pool, ())) if pool else 0
        snap.available_tutors = len(supply.get(pool, ())) if pool else 0
        snap.available_hours = round(sum(supply.get(pool, ())), 1) if pool else 0.0
        snap.sessions_7d = sessions.get(pool, 0) if pool else 0
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


@dataclass
class RebuildResult:
    events: int = 0
    students: int = 0
    tutors: int = 0
    subject_regions: int = 0


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
    result = RebuildResult()
    with transaction.atomic():
        metrics_clear()
        for batch in batches:
            fold_events(batch, now=now, refresh=False)
            result.events += len(batch)
            if on_batch is not None:
                on_batch(len(batch))
        students = list(StudentSnapshot.objects.values_list("student_id", flat=True))
        tutors = list(TutorSnapshot.objects.values_list("tutor_id", flat=True))
        snapshots_refresh(students=students, tutors=tutors, now=now)
        result.subject_regions = subject_regions_refresh(now=now)
        result.students, result.tutors = len(students), len(tutors)
    return result
