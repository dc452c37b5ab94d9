"""Session events folded into Session rows (a session counts once), the bucket deltas they make, and
each student's first/last completed session."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from operator import attrgetter
from typing import Any, NamedTuple

from django.db import connection
from django.db.models import Max

from iops.lib.sql import insert_returning_new, update_rows, upsert
from metrics.models import Session, StudentSessionFacts
from metrics.services.db import chunks, in_ids, select, vendor_c


@dataclass(slots=True)
class SessionRow:
    """The Session columns the fold reads and writes."""

    session_id: str
    student_id: str
    tutor_id: str
    subject: str = ""
    session_type: str = ""
    started_at: datetime | None = None
    started_event_id: str = ""
    completed_at: datetime | None = None
    completed_event_id: str = ""
    completed_successfully: bool | None = None
    duration_minutes: int | None = None
    student_rating: int | None = None
    tutor_rating: int | None = None
    id: int | None = None


_COLUMNS = tuple(f.name for f in fields(SessionRow))
_IDENTITY = ("session_id", "student_id", "tutor_id")
_INSERT = tuple(c for c in _COLUMNS if c != "id")  # the database assigns the id
_WRITE = tuple(c for c in _INSERT if c not in _IDENTITY)
_insert_row = attrgetter(*_INSERT)


class Timed(NamedTuple):
    """A session event with its event time: the earliest by (at, event_id) wins."""

    at: datetime
    event_id: str
    event: dict[str, Any]


class Delta(NamedTuple):
    """What one session event adds to (or, replaced by an earlier one, takes from) the buckets at `ts`."""

    session_id: str
    student_id: str
    tutor_id: str
    ts: datetime
    values: dict[str, int]


@dataclass
class SessionOutcome:
    deltas: list[Delta] = field(default_factory=list)
    completed: dict[str, SessionRow] = field(default_factory=dict)  # winning completion changed, final state
    moved_students: set[str] = field(default_factory=set)  # a completion replaced by an earlier one


def _completion_values(s: SessionRow) -> dict[str, int]:
    return {
        "sessions_completed": 1,
        "sessions_unsuccessful": 0 if s.completed_successfully else 1,
        "rating_sum": s.student_rating or 0,
        "rating_count": 1 if s.student_rating is not None else 0,
        "minutes": s.duration_minutes or 0,
    }


def _first_ok(s: SessionRow) -> bool:
    """A first session went well: completed successfully and not rated 1 or 2."""
    return bool(s.completed_successfully) and (s.student_rating is None or s.student_rating > 2)


def _lock_sessions(ids: Sequence[str]) -> dict[str, SessionRow]:
    """The stored Session rows of these ids, locked in session_id order (PostgreSQL; SQLite has one
    writer): concurrent workers cannot double count a session."""
    rows: dict[str, SessionRow] = {}
    for chunk in chunks(ids, 5000):
        found: Iterable[tuple[Any, ...]]
        if connection.vendor == "postgresql":
            q = connection.ops.quote_name
            where, params = in_ids(q("session_id"), chunk)
            found = select(
                f"SELECT {', '.join(q(c) for c in _COLUMNS)} FROM {q(Session._meta.db_table)} "  # noqa: S608 - model metadata
                f"WHERE {where} ORDER BY {q('session_id')} FOR UPDATE",
                params,
            )
        else:
            found = Session.objects.filter(session_id__in=chunk).order_by("session_id").values_list(*_COLUMNS)
        for values in found:
            s = SessionRow(*values)
            rows[s.session_id] = s
    return rows


def _new_session(t: Timed) -> SessionRow:
    p = t.event["payload"]
    return SessionRow(session_id=p["session_id"], student_id=p["student_id"], tutor_id=p["tutor_id"])


def _by_session(events: list[dict[str, Any]]) -> dict[str, list[Timed]]:
    by_session: dict[str, list[Timed]] = {}
    for e in events:
        if e["event_type"] in ("session_started", "session_completed"):
            by_session.setdefault(e["payload"]["session_id"], []).append(
                Timed(datetime.fromisoformat(e["timestamp"]), e["event_id"], e)
            )
    return by_session


def session_deltas(events: list[dict[str, Any]]) -> SessionOutcome:
    """Apply session events to Session rows (once per session_id) and return bucket deltas.

    A session's start and completion are each the earliest event by (event time, event_id), whatever
    the arrival order: a winner replaced by an earlier event moves its contribution (a negative delta
    in the old bucket, a positive one in the new), so incremental processing equals a rebuild.
    Every session of the batch is first inserted as new, with its values from the batch's events (one
    statement; a session already stored is skipped by its unique key, which also waits for another
    worker inserting it a moment ago); the sessions that were stored are then locked and updated. Most
    sessions of a batch are new: only the stored ones are read.
    """
    by_session = _by_session(events)
    outcome = SessionOutcome()
    if not by_session:
        return outcome
    fresh = {sid: _new_session(by_session[sid][0]) for sid in sorted(by_session)}
    _apply_session_events(fresh, by_session, outcome)
    inserted = insert_returning_new(
        table=Session._meta.db_table,
        columns=_INSERT,
        rows=[_insert_row(s) for s in fresh.values()],
        conflict="session_id",
    )
    if len(inserted) == len(fresh):
        return outcome
    # A new row's events never replace one another (applied in event-time order, the first wins):
    # no negative delta, no moved student. The stored sessions' share is taken from their rows.
    outcome.deltas = [d for d in outcome.deltas if d.session_id in inserted]
    outcome.completed = {sid: s for sid, s in outcome.completed.items() if sid in inserted}
    stored = _lock_sessions(sorted(set(fresh) - inserted))
    changed = _apply_session_events(stored, by_session, outcome)
    if changed:
        update_rows(model=Session, key="id", objs=changed, fields=_WRITE)
    return outcome


def _event_order(t: Timed) -> tuple[datetime, str]:
    return (t.at, t.event_id)


def _apply_session_events(
    rows: dict[str, SessionRow], by_session: dict[str, list[Timed]], outcome: SessionOutcome
) -> list[SessionRow]:
    """Fold each session's events (in event-time order) into its row; deltas and completions go to
    `outcome`. Returns the rows that changed."""
    changed: list[SessionRow] = []
    for sid, s in sorted(rows.items()):
        touched = False
        for t in sorted(by_session[sid], key=_event_order):
            if t.event["event_type"] == "session_started":
                touched = _apply_start(s, t, outcome) or touched
            else:
                touched = _apply_completion(s, t, outcome) or touched
        if touched:
            changed.append(s)
    return changed


def _apply_start(s: SessionRow, t: Timed, outcome: SessionOutcome) -> bool:
    """The start wins if it is the session's earliest; False when it does not."""
    if s.started_at is not None:
        if _event_order(t) >= (s.started_at, s.started_event_id):
            return False
        outcome.deltas.append(
            Delta(s.session_id, s.student_id, s.tutor_id, s.started_at, {"sessions_started": -1})
        )
    p = t.event["payload"]
    s.started_at, s.started_event_id = t.at, t.event_id
    s.session_type = p.get("session_type") or ""
    if p.get("subject"):
        s.subject = p["subject"]  # the winning start names the subject
    outcome.deltas.append(Delta(s.session_id, s.student_id, s.tutor_id, t.at, {"sessions_started": 1}))
    return True


def _apply_completion(s: SessionRow, t: Timed, outcome: SessionOutcome) -> bool:
    """The completion wins if it is the session's earliest; False when it does not."""
    if s.completed_at is not None:
        if _event_order(t) >= (s.completed_at, s.completed_event_id):
            return False
        taken = {k: -v for k, v in _completion_values(s).items()}
        outcome.deltas.append(Delta(s.session_id, s.student_id, s.tutor_id, s.completed_at, taken))
        outcome.moved_students.add(s.student_id)
    p = t.event["payload"]
    s.completed_at, s.completed_event_id = t.at, t.event_id
    s.completed_successfully = bool(p.get("completed_successfully", True))
    s.duration_minutes = p.get("actual_duration_minutes")
    s.student_rating = p.get("student_rating")
    s.tutor_rating = p.get("tutor_rating")
    if p.get("subject") and not s.subject:
        s.subject = p["subject"]
    outcome.deltas.append(Delta(s.session_id, s.student_id, s.tutor_id, t.at, _completion_values(s)))
    outcome.completed[s.session_id] = s
    return True


def fold_facts(outcome: SessionOutcome) -> None:
    """Fold this batch's completions into each student's first/last-session facts.

    Completions only ever move earlier (the earliest event wins), so the first completed session —
    the least (completed_at, session_id) — only moves earlier, and one statement keeps it under the
    row lock, race-free: a candidate replaces the stored first when it is earlier or is the same
    session (its winning completion changed). The last completion only moves later, except when a
    completion is replaced by an earlier one: those (rare) students are recomputed from their sessions.
    """
    best: dict[str, SessionRow] = {}
    last: dict[str, datetime] = {}
    for s in outcome.completed.values():
        at = s.completed_at
        if at is None:  # a completed session has its time
            continue
        b = best.get(s.student_id)
        if b is None or (at, s.session_id) < (b.completed_at, b.session_id):
            best[s.student_id] = s
        if s.student_id not in last or at > last[s.student_id]:
            last[s.student_id] = at
    if best:
        _upsert_facts(best, last)
    if outcome.moved_students:
        latest = (
            Session.objects.filter(student_id__in=sorted(outcome.moved_students), completed_at__isnull=False)
            .values("student_id")
            .annotate(last=Max("completed_at"))
            .values_list("student_id", "last")
        )
        for student_id, at in latest:
            StudentSessionFacts.objects.filter(student_id=student_id).update(last_completed_at=at)


def _upsert_facts(best: dict[str, SessionRow], last: dict[str, datetime]) -> None:
    """One statement: the first moves only earlier (or is restated), the last only later."""
    table = "{t}"
    earlier = (
        f"{table}.first_completed_at IS NULL OR {table}.first_session_id = excluded.first_session_id "
        f"OR (excluded.first_completed_at, {vendor_c('excluded.first_session_id')}) "
        f"< ({table}.first_completed_at, {vendor_c(table + '.first_session_id')})"
    )
    upsert(
        table=StudentSessionFacts._meta.db_table,
        columns=["student_id", "first_completed_at", "first_session_id", "first_ok", "last_completed_at"],
        rows=[
            (sid, s.completed_at, s.session_id, _first_ok(s), last[sid]) for sid, s in sorted(best.items())
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
