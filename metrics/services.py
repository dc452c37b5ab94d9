"""The aggregation step: fold a batch of new events into buckets, then refresh touched snapshots.

Cost grows with the entities a batch touches, not with history: one bulk upsert per bucket table,
one aggregate query per snapshot table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Max, Min, Q, Sum, Window
from django.db.models.functions import RowNumber

from iops.lib.sql import insert_ignore, update_rows, upsert_add
from metrics.burnout import burnout_components, burnout_risk
from metrics.health import health_components, health_score
from metrics.models import (
    IB_REASONS,
    GlobalMinute,
    Session,
    StudentHourly,
    StudentSnapshot,
    SubjectRegionSnapshot,
    SupplyDemandReading,
    TutorHourly,
    TutorSnapshot,
)
from metrics.regions import REGION_TIMEZONES, region_label
from metrics.windows import floor_hour, window_start

SESSION_VALUES = [
    "sessions_started",
    "sessions_completed",
    "sessions_unsuccessful",
    "rating_sum",
    "rating_count",
    "minutes",
]
IB_VALUES = ["ib_calls", "ib_unresolved", "ib_high_priority", *[f"ib_{r}" for r in IB_REASONS]]
STUDENT_VALUES = SESSION_VALUES + IB_VALUES
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


@dataclass
class Touched:
    students: set[str] = field(default_factory=set)
    tutors: set[str] = field(default_factory=set)
    subject_regions: set[tuple[str, str]] = field(default_factory=set)
    health_reported: set[str] = field(default_factory=set)
    first_sessions: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.students or self.tutors or self.subject_regions)


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _completion_values(s: Session) -> dict[str, int]:
    return {
        "sessions_completed": 1,
        "sessions_unsuccessful": 0 if s.completed_successfully else 1,
        "rating_sum": s.student_rating or 0,
        "rating_count": 1 if s.student_rating is not None else 0,
        "minutes": s.duration_minutes or 0,
    }


def _session_deltas(events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], set[str]]:
    """Apply session events to Session rows (once per session_id) and return bucket deltas.

    A session's start and completion are each the earliest event by (event time, event_id), whatever
    the arrival order: a winner replaced by an earlier event moves its contribution (a negative delta
    in the old bucket, a positive one in the new), so incremental processing equals a rebuild.
    Returns the deltas and the students whose first completed session may have changed.
    """
    session_events = sorted(
        (e for e in events if e["event_type"] in ("session_started", "session_completed")),
        key=lambda e: (_ts(e["timestamp"]), e["event_id"]),
    )
    if not session_events:
        return [], set()
    ids = sorted({e["payload"]["session_id"] for e in session_events})
    # Create missing rows first, then lock them in a fixed order: concurrent workers cannot double count.
    first_seen = {}
    for e in session_events:
        p = e["payload"]
        first_seen.setdefault(p["session_id"], (p["session_id"], p["student_id"], p["tutor_id"]))
    insert_ignore(
        table=Session._meta.db_table,
        columns=[
            "session_id",
            "student_id",
            "tutor_id",
            "subject",
            "session_type",
            "started_event_id",
            "completed_event_id",
        ],
        rows=[(*first_seen[sid], "", "", "", "") for sid in ids],
        conflict=["session_id"],
    )
    qs = Session.objects.filter(session_id__in=ids).order_by("session_id")
    if connection.vendor == "postgresql":
        qs = qs.select_for_update()
    rows = {s.session_id: s for s in qs}
    changed: dict[str, Session] = {}
    deltas: list[dict[str, Any]] = []
    completed_students: set[str] = set()
    for e in session_events:
        p = e["payload"]
        s = rows[p["session_id"]]
        ts = _ts(e["timestamp"])
        key = (ts, e["event_id"])
        who = {"student_id": s.student_id, "tutor_id": s.tutor_id}
        if e["event_type"] == "session_started":
            if s.started_at is not None:
                if key >= (s.started_at, s.started_event_id):
                    continue
                deltas.append({**who, "ts": s.started_at, "sessions_started": -1})
            s.started_at, s.started_event_id = ts, e["event_id"]
            s.session_type = p.get("session_type") or ""
            if p.get("subject"):
                s.subject = p["subject"]  # the winning start names the subject
            deltas.append({**who, "ts": ts, "sessions_started": 1})
        else:
            if s.completed_at is not None:
                if key >= (s.completed_at, s.completed_event_id):
                    continue
                deltas.append(
                    {**who, "ts": s.completed_at, **{k: -v for k, v in _completion_values(s).items()}}
                )
            s.completed_at, s.completed_event_id = ts, e["event_id"]
            s.completed_successfully = bool(p.get("completed_successfully", True))
            s.duration_minutes = p.get("actual_duration_minutes")
            s.student_rating = p.get("student_rating")
            s.tutor_rating = p.get("tutor_rating")
            if p.get("subject") and not s.subject:
                s.subject = p["subject"]
            deltas.append({**who, "ts": ts, **_completion_values(s)})
            completed_students.add(s.student_id)
        changed[s.session_id] = s
    if changed:
        update_rows(
            model=Session,
            key="id",
            objs=list(changed.values()),
            fields=[
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
            ],
        )
    return deltas, completed_students


def _ib_frame(events: list[dict[str, Any]]) -> pd.DataFrame:
    calls = [e for e in events if e["event_type"] == "ib_call_logged"]
    if not calls:
        return pd.DataFrame()
    df = pd.DataFrame(
        {
            "student_id": [e["payload"]["student_id"] for e in calls],
            "ts": [_ts(e["timestamp"]) for e in calls],
            "reason": [e["payload"].get("reason", "other") for e in calls],
            "resolved": [e["payload"].get("resolved") for e in calls],
            "priority": [e["payload"].get("priority") for e in calls],
        }
    )
    df["ib_calls"] = 1
    df["ib_unresolved"] = (df["resolved"] == False).astype(int)  # noqa: E712 - None means "not reported"
    df["ib_high_priority"] = (df["priority"] == "high").astype(int)
    for reason in IB_REASONS:
        df[f"ib_{reason}"] = (df["reason"] == reason).astype(int)
    return df


def _fold_buckets(
    session_deltas: list[dict[str, Any]], ib: pd.DataFrame, events: list[dict[str, Any]]
) -> None:
    sessions = pd.DataFrame(session_deltas)
    if not sessions.empty:
        for col in SESSION_VALUES:
            sessions[col] = sessions[col].fillna(0).astype(int) if col in sessions else 0
        sessions["hour"] = sessions["ts"].map(floor_hour)
    frames = [f for f in (sessions, ib) if not f.empty]
    if frames:
        student = pd.concat([f.assign(hour=f["ts"].map(floor_hour)) for f in frames], ignore_index=True)
        for col in STUDENT_VALUES:
            student[col] = student[col].fillna(0).astype(int) if col in student else 0
        grouped = student.groupby(["student_id", "hour"], sort=True)[STUDENT_VALUES].sum().reset_index()
        upsert_add(
            table=StudentHourly._meta.db_table,
            keys=["student_id", "hour"],
            values=STUDENT_VALUES,
            rows=list(grouped[["student_id", "hour", *STUDENT_VALUES]].itertuples(index=False, name=None)),
        )
    if not sessions.empty:
        tutor = sessions.groupby(["tutor_id", "hour"], sort=True)[SESSION_VALUES].sum().reset_index()
        upsert_add(
            table=TutorHourly._meta.db_table,
            keys=["tutor_id", "hour"],
            values=SESSION_VALUES,
            rows=list(tutor[["tutor_id", "hour", *SESSION_VALUES]].itertuples(index=False, name=None)),
        )
    # Global per-minute series: arrivals by receive minute, the rest by event minute.
    minute_rows = [
        {"minute": _ts(e["received_at"]).replace(second=0, microsecond=0), "received": 1} for e in events
    ] + [{"minute": _ts(e["timestamp"]).replace(second=0, microsecond=0), "events": 1} for e in events]
    if not sessions.empty:
        minute_rows += sessions.assign(
            minute=sessions["ts"].map(lambda t: t.replace(second=0, microsecond=0))
        )[["minute", "sessions_started", "sessions_completed", "sessions_unsuccessful"]].to_dict("records")
    if not ib.empty:
        minute_rows += [{"minute": t.replace(second=0, microsecond=0), "ib_calls": 1} for t in ib["ts"]]
    minutes = pd.DataFrame(minute_rows)
    for col in MINUTE_VALUES:
        minutes[col] = minutes[col].fillna(0).astype(int) if col in minutes else 0
    per_minute = minutes.groupby("minute", sort=True)[MINUTE_VALUES].sum().reset_index()
    upsert_add(
        table=GlobalMinute._meta.db_table,
        keys=["minute"],
        values=MINUTE_VALUES,
        rows=list(per_minute[["minute", *MINUTE_VALUES]].itertuples(index=False, name=None)),
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


def _ensure_snapshots(students: set[str], tutors: set[str], now: datetime) -> None:
    insert_ignore(
        table=StudentSnapshot._meta.db_table,
        columns=[
            "student_id",
            "as_of",
            "updated_at",
            "ib_reasons_14d",
            "health_components",
            "prior_weekly_mean",
            "velocity_trend",
            "platform_churn_risk",
            "platform_event_id",
            "first_session_id",
        ]
        + [
            f
            for f in (
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
            )
        ],
        rows=[(s, now, now, "{}", "{}", 0.0, "", "", "", "") + (0,) * 12 for s in sorted(students)],
        conflict=["student_id"],
    )
    insert_ignore(
        table=TutorSnapshot._meta.db_table,
        columns=[
            "tutor_id",
            "as_of",
            "updated_at",
            "subjects",
            "timezone",
            "availability_event_id",
            "region",
            "burnout_components",
            "prior_weekly_mean",
            "hours_taught_7d",
            "sessions_7d",
            "sessions_14d",
            "sessions_30d",
            "sessions_started_30d",
            "unsuccessful_30d",
            "rated_sessions",
        ],
        rows=[(t, now, now, "[]", "", "", "", "{}", 0.0, 0.0, 0, 0, 0, 0, 0, 0) for t in sorted(tutors)],
        conflict=["tutor_id"],
    )


def _apply_reports(events: list[dict[str, Any]], now: datetime, touched: Touched) -> None:
    """Latest-wins readings the platform reports (health, availability), each reading as a whole."""
    health = _latest(events, "customer_health_update", lambda p: p["student_id"])
    if health:
        updated = []
        for snap in StudentSnapshot.objects.filter(student_id__in=list(health)):
            e = health[snap.student_id]
            ts = _ts(e["timestamp"])
            if snap.platform_reported_at and (snap.platform_reported_at, snap.platform_event_id) > (
                ts,
                e["event_id"],
            ):
                continue  # a late reading never overwrites a newer one
            p = e["payload"]
            snap.platform_health_score = p.get("health_score")
            snap.platform_churn_risk = p.get("churn_risk") or ""
            snap.platform_reported_at = ts
            snap.platform_event_id = e["event_id"]
            updated.append(snap)
            touched.health_reported.add(snap.student_id)
        update_rows(
            model=StudentSnapshot,
            key="id",
            objs=updated,
            fields=[
                "platform_health_score",
                "platform_churn_risk",
                "platform_reported_at",
                "platform_event_id",
            ],
        )
    availability = _latest(events, "tutor_availability_updated", lambda p: p["tutor_id"])
    if availability:
        updated_t = []
        for snap in TutorSnapshot.objects.filter(tutor_id__in=list(availability)):
            e = availability[snap.tutor_id]
            ts = _ts(e["timestamp"])
            if snap.availability_reported_at and (
                snap.availability_reported_at,
                snap.availability_event_id,
            ) > (ts, e["event_id"]):
                continue
            p = e["payload"]
            snap.available_hours = p.get("available_hours_this_week")
            snap.subjects = list(p.get("subjects") or [])
            snap.timezone = p.get("timezone") or ""
            snap.region = region_label(snap.timezone)
            snap.accepts_instant_book = p.get("accepts_instant_book")
            snap.availability_reported_at = ts
            snap.availability_event_id = e["event_id"]
            updated_t.append(snap)
        update_rows(
            model=TutorSnapshot,
            key="id",
            objs=updated_t,
            fields=[
                "available_hours",
                "subjects",
                "timezone",
                "region",
                "accepts_instant_book",
                "availability_reported_at",
                "availability_event_id",
            ],
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


def _apply_supply_demand(events: list[dict[str, Any]], now: datetime, touched: Touched) -> None:
    """Store every reading; balance status is a hysteresis fold over a cell's readings in event-time
    order. In-order readings step the stored state; a reading older than the latest replays the cell."""
    readings = sorted((e for e in events if e["event_type"] == "supply_demand_update"), key=_order_key)
    if not readings:
        return
    insert_ignore(
        table=SupplyDemandReading._meta.db_table,
        columns=[
            "event_id",
            "subject",
            "region",
            "reported_at",
            "demand_score",
            "supply_score",
            "available_tutors",
            "active_students",
            "balance_status",
        ],
        rows=[_reading_row(e) for e in readings],
        conflict=["event_id"],
    )
    by_cell: dict[tuple[str, str], list[tuple]] = {}
    for e in readings:
        row = _reading_row(e)
        by_cell.setdefault((row[1], row[2]), []).append(row)
    snaps = _subject_region_rows(set(by_cell), now)
    for cell, rows in sorted(by_cell.items()):
        snap = snaps[cell]
        if snap.reported_at is not None and (rows[0][3], rows[0][0]) < (
            snap.reported_at,
            snap.report_event_id,
        ):
            _balance_reset(snap)
            rows = list(
                SupplyDemandReading.objects.filter(subject=cell[0], region=cell[1])
                .order_by("reported_at", "event_id")
                .values_list(
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
            )
        for row in rows:
            _balance_step(snap, row)
        snap.updated_at = now
        touched.subject_regions.add(cell)
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
    deltas, completed_students = _session_deltas(events)
    _fold_buckets(deltas, _ib_frame(events), events)
    _ensure_snapshots(touched.students, touched.tutors, now)
    _apply_reports(events, now, touched)
    touched.first_sessions = completed_students
    if refresh:
        snapshots_refresh(students=touched.students, tutors=touched.tutors, now=now)
    return touched


def _window_sums(model, key: str, ids: list[str], fields: dict[str, tuple[str, int]], now: datetime):
    """{id: {name: sum}} for each name -> (column, days) over hour buckets, in one query."""
    oldest = max(days for _, days in fields.values())
    annotations = {
        name: Sum(column, filter=Q(hour__gte=window_start(now, days)), default=0)
        for name, (column, days) in fields.items()
    }
    rows = (
        model.objects.filter(**{f"{key}__in": ids}, hour__gte=window_start(now, oldest), hour__lte=now)
        .values(key)
        .annotate(**annotations)
    )
    return {r[key]: r for r in rows}


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


def snapshots_refresh(*, students: set[str] | list[str], tutors: set[str] | list[str], now: datetime) -> None:
    """Recompute the windowed part of snapshots for these entities as of `now` (windows decay)."""
    student_ids = sorted(students)
    if student_ids:
        _refresh_students(student_ids, now)
    tutor_ids = sorted(tutors)
    if tutor_ids:
        _refresh_tutors(tutor_ids, now)


def _refresh_students(ids: list[str], now: datetime) -> None:
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        sums = _window_sums(StudentHourly, "student_id", chunk, STUDENT_WINDOWS, now)
        sessions = {
            r["student_id"]: r
            for r in Session.objects.filter(
                student_id__in=chunk, completed_at__isnull=False, completed_at__lte=now
            )
            .values("student_id")
            .annotate(first=Min("completed_at"), last=Max("completed_at"))
        }
        firsts = {}
        if sessions:
            # Each student's first completed session: the earliest, ties broken by session_id.
            ranked = Session.objects.filter(
                student_id__in=list(sessions), completed_at__isnull=False, completed_at__lte=now
            ).annotate(
                rank=Window(
                    RowNumber(), partition_by=[F("student_id")], order_by=[F("completed_at"), F("session_id")]
                )
            )
            for s in ranked.filter(rank=1):
                firsts[s.student_id] = s
        snaps = list(StudentSnapshot.objects.filter(student_id__in=chunk))
        for snap in snaps:
            w = sums.get(snap.student_id, {})
            get = lambda name, w=w: int(w.get(name) or 0)  # noqa: E731
            for name in (
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
            ):
                setattr(snap, name, get(name))
            snap.ib_reasons_14d = {r: get(f"ib_{r}_14d") for r in IB_REASONS if get(f"ib_{r}_14d")}
            snap.rated_sessions_30d = get("rating_count_30d")
            snap.avg_rating_given = (
                round(get("rating_sum_30d") / snap.rated_sessions_30d, 2) if snap.rated_sessions_30d else None
            )
            prior = (get("sessions_28d") - snap.sessions_7d) / 3
            snap.prior_weekly_mean = round(prior, 3)
            snap.velocity = round(snap.sessions_7d / prior, 3) if prior > 0 else None
            snap.velocity_trend = velocity_trend(snap.velocity, prior, snap.sessions_7d)
            s = sessions.get(snap.student_id)
            first = firsts.get(snap.student_id)
            snap.last_session_at = s["last"] if s else None
            snap.days_since_last_session = round((now - s["last"]).total_seconds() / 86400, 2) if s else None
            if first is not None:
                snap.first_session_at = first.completed_at
                snap.first_session_id = first.session_id
                snap.first_session_ok = bool(first.completed_successfully) and (
                    first.student_rating is None or first.student_rating > 2
                )
            components = health_components(
                sessions_7d=snap.sessions_7d,
                sessions_30d=snap.sessions_30d,
                prior_weekly_mean=prior,
                ib_calls_14d=snap.ib_calls_14d,
                ib_unresolved_14d=snap.ib_unresolved_14d,
                ib_high_priority_14d=snap.ib_high_priority_14d,
                avg_rating_given=snap.avg_rating_given,
                first_session_ok=snap.first_session_ok,
                days_since_last_session=snap.days_since_last_session,
            )
            snap.health_components = components
            # Without a single session there is nothing to judge engagement by: no score rather than a made-up one.
            snap.health_score = (
                health_score(components) if snap.last_session_at or snap.sessions_started_30d else None
            )
            snap.as_of = now
            snap.updated_at = now
        update_rows(
            model=StudentSnapshot,
            key="id",
            objs=snaps,
            fields=[
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
                "health_components",
                "health_score",
                "as_of",
                "updated_at",
            ],
        )


def _refresh_tutors(ids: list[str], now: datetime) -> None:
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        sums = _window_sums(TutorHourly, "tutor_id", chunk, TUTOR_WINDOWS, now)
        snaps = list(TutorSnapshot.objects.filter(tutor_id__in=chunk))
        for snap in snaps:
            w = sums.get(snap.tutor_id, {})
            get = lambda name, w=w: int(w.get(name) or 0)  # noqa: E731
            snap.sessions_7d, snap.sessions_14d, snap.sessions_30d = (
                get("sessions_7d"),
                get("sessions_14d"),
                get("sessions_30d"),
            )
            snap.sessions_started_30d = get("sessions_started_30d")
            snap.unsuccessful_30d = get("unsuccessful_30d")
            snap.rated_sessions = get("rating_count_30d")
            # Mean of rated sessions only (the prototype divided by all sessions and started at 0).
            snap.avg_rating = (
                round(get("rating_sum_30d") / snap.rated_sessions, 2) if snap.rated_sessions else None
            )
            snap.completion_rate = (
                round((snap.sessions_30d - snap.unsuccessful_30d) / snap.sessions_30d, 3)
                if snap.sessions_30d
                else None
            )
            snap.hours_taught_7d = round(get("minutes_7d") / 60, 2)
            snap.utilisation = (
                round(snap.hours_taught_7d / snap.available_hours, 3) if snap.available_hours else None
            )
            rated_7d = get("rating_count_7d")
            rated_prior = snap.rated_sessions - rated_7d
            snap.avg_rating_7d = round(get("rating_sum_7d") / rated_7d, 2) if rated_7d else None
            snap.avg_rating_prior = (
                round((get("rating_sum_30d") - get("rating_sum_7d")) / rated_prior, 2)
                if rated_prior
                else None
            )
            snap.prior_weekly_mean = round((get("sessions_28d") - snap.sessions_7d) / 3, 3)
            components = burnout_components(
                utilisation=snap.utilisation,
                avg_rating_7d=snap.avg_rating_7d,
                rated_7d=rated_7d,
                avg_rating_prior=snap.avg_rating_prior,
                rated_prior=rated_prior,
                sessions_7d=snap.sessions_7d,
                prior_weekly_mean=snap.prior_weekly_mean,
            )
            snap.burnout_components = components
            # No sessions and no availability: nothing to judge load by.
            active = snap.sessions_30d or snap.sessions_started_30d or snap.available_hours
            snap.burnout_risk = burnout_risk(components) if active else None
            snap.as_of = now
            snap.updated_at = now
        update_rows(
            model=TutorSnapshot,
            key="id",
            objs=snaps,
            fields=[
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
            ],
        )


def snapshots_refresh_stale(
    *, now: datetime, older_than: timedelta = timedelta(hours=1), limit: int = 5000
) -> Touched:
    """Windows decay with time, not only with events: re-evaluate snapshots not refreshed recently.
    Returns the students and tutors refreshed (the alert rules run over them next)."""
    cutoff = now - older_than
    # Only snapshots with something left in a window can still decay.
    students = list(
        StudentSnapshot.objects.filter(as_of__lt=cutoff)
        .filter(Q(sessions_30d__gt=0) | Q(ib_calls_30d__gt=0) | Q(sessions_started_30d__gt=0))
        .values_list("student_id", flat=True)[:limit]
    )
    tutors = list(
        TutorSnapshot.objects.filter(as_of__lt=cutoff)
        .filter(Q(sessions_30d__gt=0) | Q(sessions_started_30d__gt=0))
        .values_list("tutor_id", flat=True)[:limit]
    )
    snapshots_refresh(students=students, tutors=tutors, now=now)
    subject_regions_refresh(now=now)
    return Touched(students=set(students), tutors=set(tutors))


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
