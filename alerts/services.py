"""Alert writes: raise (deduplicated by fingerprint), evaluate rules for touched entities, transitions."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q

from alerts.feedback import label_record
from alerts.models import (
    ACTIVE_STATUSES,
    SEVERITY_RANK,
    Alert,
    AlertTransition,
    AlertType,
    EntityType,
    Status,
)
from alerts.rules import (
    ONCE_PER_ENTITY,
    RULE_TYPES,
    Candidate,
    student_rules,
    subject_region_rules,
    tutor_rules,
)
from iops.lib import realtime
from iops.lib.sql import insert_rows, pg_execute, update_rows
from metrics.models import StudentSnapshot, SubjectRegionSnapshot, TutorSnapshot
from metrics.vocabulary import cell_key, cell_parse

logger = logging.getLogger(__name__)

AUTO_RESOLVED = "auto-resolved"
_CHUNK = 500


class TransitionNotAllowed(Exception):
    """The lifecycle does not allow this change (answered with 409)."""


@dataclass(frozen=True)
class Raised:
    alert_id: int
    created: bool
    escalated: bool


def fingerprint(*, type: str, entity_type: str, entity_id: str) -> str:  # noqa: A002
    return f"{type}:{entity_type}:{entity_id}"


def _tick_cutoff(now: datetime) -> datetime:
    """An active alert last seen at or before this has its repeat tick due (ALERT_REPEAT_TICK_SECONDS)."""
    return now - timedelta(seconds=settings.ALERT_REPEAT_TICK_SECONDS)


def alert_raise(*, candidate: Candidate, now: datetime) -> Raised | None:
    """Open an alert for this fingerprint, or count a repeat on the active one (escalating severity);
    None for a repeat inside its tick (nothing written, see _writes).

    The one-at-a-time path: alerts_evaluate falls back to it when a batched insert races another worker."""
    cutoff = _tick_cutoff(now)
    for _attempt in range(3):
        active = (
            Alert.objects.select_for_update()
            .filter(fingerprint=candidate.fingerprint, status__in=ACTIVE_STATUSES)
            .first()
        )
        if active is not None:
            if not _writes(active, candidate, cutoff, count_repeats=True):
                return None  # the worker that opened it a moment ago counted this tick
            escalated = SEVERITY_RANK[candidate.severity] > SEVERITY_RANK[active.severity]
            if escalated:
                AlertTransition.objects.create(
                    alert=active,
                    at=now,
                    from_status=active.status,
                    to_status=active.status,
                    note=f"escalated {active.severity} → {candidate.severity}",
                )
                active.severity = candidate.severity
            active.occurrences += 1
            active.last_seen = max(active.last_seen, now)
            active.message = candidate.message[:300]
            active.details = candidate.details
            active.clear_since = None
            active.save(
                update_fields=["severity", "occurrences", "last_seen", "message", "details", "clear_since"]
            )
            return Raised(active.pk, created=False, escalated=escalated)
        try:
            with transaction.atomic():
                alert = Alert.objects.create(**_new_alert_fields(candidate, now))
                AlertTransition.objects.create(alert=alert, at=now, to_status=Status.OPEN, note="raised")
        except IntegrityError:
            continue  # another worker opened it a moment ago: count ours as a repeat
        _log_created([alert])
        return Raised(alert.pk, created=True, escalated=False)
    raise RuntimeError(f"could not raise alert {candidate.fingerprint}")


def _new_alert_fields(c: Candidate, now: datetime) -> dict:
    return {
        "fingerprint": c.fingerprint,
        "type": c.type,
        "severity": c.severity,
        "entity_type": c.entity_type,
        "entity_id": c.entity_id,
        "message": c.message[:300],
        "details": c.details,
        "first_seen": now,
        "last_seen": now,
    }


def _insert_alerts(new: list[Candidate], now: datetime) -> list[SimpleNamespace]:
    """Open these alerts and their "raised" transitions: two statements, no model instances. Raises
    IntegrityError when another worker opened one of them first (the partial unique index)."""
    columns = [
        "fingerprint",
        "type",
        "severity",
        "status",
        "entity_type",
        "entity_id",
        "message",
        "details",
        "occurrences",
        "first_seen",
        "last_seen",
        "dismiss_reason",
    ]
    rows = [
        (
            c.fingerprint,
            c.type,
            c.severity,
            Status.OPEN.value,
            c.entity_type,
            c.entity_id,
            c.message[:300],
            json.dumps(c.details),
            1,
            now,
            now,
            "",
        )
        for c in new
    ]
    ids = dict(
        insert_rows(table=Alert._meta.db_table, columns=columns, rows=rows, returning=["fingerprint", "id"])
    )
    created = [SimpleNamespace(pk=ids[c.fingerprint], type=c.type, severity=c.severity) for c in new]
    insert_rows(
        table=AlertTransition._meta.db_table,
        columns=["alert_id", "at", "from_status", "to_status", "note"],
        rows=[(a.pk, now, "", Status.OPEN.value, "raised") for a in created],
    )
    return created


def _log_created(alerts: Iterable[Any]) -> None:
    for a in alerts:
        logger.info("alert raised", extra={"alert_id": a.pk, "type": a.type, "severity": a.severity})


def _chunks(values: list, size: int = _CHUNK) -> Iterable[list]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _candidates(
    *,
    students: Iterable[str],
    tutors: Iterable[str],
    subject_regions: Iterable[tuple[str, str]],
    now: datetime,
    student_views: dict | None = None,
    tutor_views: dict | None = None,
    velocity_students: set[str] | None = None,
) -> tuple[list[Candidate], set[str]]:
    """Run the rules over the snapshots of these entities: the candidates, and every fingerprint decided.

    `student_views` / `tutor_views`: the rule inputs of snapshots this transaction just refreshed
    (metrics `Touched`), read from the database only for entities they lack. `velocity_students`: whose
    session velocity this evaluation may judge (None: everyone's); for the others `velocity_drop` is
    neither raised nor cleared."""
    candidates: list[Candidate] = []
    evaluated: set[str] = set()

    def decided(entity_type: str, entity_id: str, *, skip: str = "") -> None:
        for t in RULE_TYPES[entity_type]:
            if t != skip:
                evaluated.add(fingerprint(type=t, entity_type=entity_type, entity_id=entity_id))

    def judge_student(snap) -> None:
        judge = velocity_students is None or snap.student_id in velocity_students
        decided(EntityType.STUDENT, snap.student_id, skip="" if judge else AlertType.VELOCITY_DROP)
        candidates.extend(student_rules(snap, judge_velocity=judge, now=now))

    student_views, tutor_views = student_views or {}, tutor_views or {}
    for student_id in sorted(students):
        if (snap := student_views.get(student_id)) is not None:
            judge_student(snap)
    for chunk in _chunks(sorted(set(students) - student_views.keys())):
        for snap in StudentSnapshot.objects.filter(student_id__in=chunk):
            judge_student(snap)
    for tutor_id in sorted(tutors):
        if (snap := tutor_views.get(tutor_id)) is not None:
            decided(EntityType.TUTOR, tutor_id)
            candidates.extend(tutor_rules(snap))
    for chunk in _chunks(sorted(set(tutors) - tutor_views.keys())):
        for snap in TutorSnapshot.objects.filter(tutor_id__in=chunk):
            decided(EntityType.TUTOR, snap.tutor_id)
            candidates.extend(tutor_rules(snap))
    cells = sorted(subject_regions)
    for chunk in _chunks(cells):
        wanted = set(chunk)
        q = Q()
        for subject, region in chunk:
            q |= Q(subject=subject, region=region)
        for snap in SubjectRegionSnapshot.objects.filter(q):
            if (snap.subject, snap.region) in wanted:
                decided(EntityType.SUBJECT_REGION, cell_key(snap.subject, snap.region))
                candidates.extend(subject_region_rules(snap, now))
    return candidates, evaluated


def alerts_evaluate(
    *,
    now: datetime,
    touched=None,
    students: Iterable[str] = (),
    tutors: Iterable[str] = (),
    subject_regions: Iterable[tuple[str, str]] = (),
    count_repeats: bool = True,
    velocity_students: set[str] | None = None,
) -> list[Raised]:
    """Run the rules for touched entities (a metrics `Touched`, or the id sets) and record the outcome:
    new alerts, repeats, escalations, and `clear_since` on active alerts whose condition is now false.
    Call inside the batch transaction. `count_repeats=False` for re-evaluations driven by time, not by
    an event."""
    views: dict = {}
    if touched is not None:
        students, tutors, subject_regions = touched.students, touched.tutors, touched.subject_regions
        views = {
            "student_views": getattr(touched, "student_views", None),
            "tutor_views": getattr(touched, "tutor_views", None),
        }
    candidates, evaluated = _candidates(
        students=students,
        tutors=tutors,
        subject_regions=subject_regions,
        now=now,
        velocity_students=velocity_students,
        **views,
    )
    return alerts_record(candidates=candidates, evaluated=evaluated, now=now, count_repeats=count_repeats)


_ACTIVE_FIELDS = (
    "id",
    "fingerprint",
    "severity",
    "status",
    "clear_since",
    "occurrences",
    "last_seen",
    "message",
)


def _active(fps: list[str], *, lock: bool) -> dict[str, SimpleNamespace]:
    """The active alerts of these fingerprints, `lock`ed in a fixed order (two workers locking
    overlapping sets cannot deadlock): the fields alerts_record reads and writes, not model instances."""
    if connection.vendor == "postgresql":
        q = connection.ops.quote_name
        rows = pg_execute(
            f"SELECT {', '.join(q(f) for f in _ACTIVE_FIELDS)} FROM {q(Alert._meta.db_table)} "  # noqa: S608 - model metadata
            "WHERE fingerprint = ANY(%b::varchar[]) AND status = ANY(%b::varchar[]) "
            "ORDER BY fingerprint" + (" FOR UPDATE" if lock else ""),
            [fps, list(ACTIVE_STATUSES)],
            fetch=True,
        )
    else:
        rows = []
        for chunk in _chunks(fps):
            qs = Alert.objects.filter(fingerprint__in=chunk, status__in=ACTIVE_STATUSES)
            rows.extend(qs.order_by("fingerprint").values_list(*_ACTIVE_FIELDS))
    active: dict[str, SimpleNamespace] = {}
    for row in rows:
        alert = SimpleNamespace(**dict(zip(_ACTIVE_FIELDS, row, strict=True)))
        alert.pk = alert.id
        active[alert.fingerprint] = alert
    return active


def _seen_ever(fps: list[str]) -> set[str]:
    seen: set[str] = set()
    for chunk in _chunks(fps):
        seen.update(Alert.objects.filter(fingerprint__in=chunk).values_list("fingerprint", flat=True))
    return seen


def _cooling_down(candidates: list[Candidate], now: datetime) -> set[str]:
    """Fingerprints dismissed or auto-resolved within the cooldown, unless the new severity is higher."""
    minutes = settings.ALERT_COOLDOWN_MINUTES
    if not minutes or not candidates:
        return set()
    by_fp = {c.fingerprint: c for c in candidates}
    closed: dict[str, str] = {}
    for chunk in _chunks(sorted(by_fp)):
        rows = (
            AlertTransition.objects.filter(
                alert__fingerprint__in=chunk, at__gte=now - timedelta(minutes=minutes)
            )
            .filter(Q(to_status=Status.DISMISSED) | Q(to_status=Status.RESOLVED, note=AUTO_RESOLVED))
            .values_list("alert__fingerprint", "alert__severity")
        )
        for fp, severity in rows:
            if SEVERITY_RANK[severity] > SEVERITY_RANK.get(closed.get(fp, ""), -1):
                closed[fp] = severity
    return {fp for fp, sev in closed.items() if SEVERITY_RANK[by_fp[fp].severity] <= SEVERITY_RANK[sev]}


def _strongest(candidates: list[Candidate], evaluated: set[str]) -> dict[str, Candidate]:
    """One candidate per fingerprint (the most severe); a once-per-entity type raised before is dropped
    from the evaluation (neither repeated nor cleared)."""
    by_fp: dict[str, Candidate] = {}
    for c in candidates:
        held = by_fp.get(c.fingerprint)
        if held is None or SEVERITY_RANK[c.severity] > SEVERITY_RANK[held.severity]:
            by_fp[c.fingerprint] = c
    once = sorted(fp for fp, c in by_fp.items() if c.type in ONCE_PER_ENTITY)
    if once:
        for fp in _seen_ever(once):
            del by_fp[fp]
            evaluated.discard(fp)
    return by_fp


def _escalation(alert: SimpleNamespace, c: Candidate, now: datetime) -> AlertTransition | None:
    if SEVERITY_RANK[c.severity] <= SEVERITY_RANK[alert.severity]:
        return None
    transition = AlertTransition(
        alert_id=alert.id,
        at=now,
        from_status=alert.status,
        to_status=alert.status,
        note=f"escalated {alert.severity} → {c.severity}",
    )
    alert.severity = c.severity
    return transition


def _insert_new(new: list[Candidate], now: datetime) -> list[Raised]:
    try:
        with transaction.atomic():
            created = _insert_alerts(new, now)
    except IntegrityError:
        # Another worker opened one of these a moment ago: one at a time, counting ours as repeats.
        return [r for c in new if (r := alert_raise(candidate=c, now=now)) is not None]
    _log_created(created)
    return [Raised(a.pk, created=True, escalated=False) for a in created]


def _writes(alert: Any, c: Candidate | None, cutoff: datetime, count_repeats: bool) -> bool:
    """Whether this evaluation writes an active alert: a clear (no candidate) not yet marked, an
    escalation or a condition back after a clear at once; a repeat once per tick (ALERT_REPEAT_TICK_SECONDS,
    last_seen at or before `cutoff`), even if its figures moved inside the tick (they catch up at the
    next one). The sweep's re-check (`count_repeats=False`) never counts: it writes news and moved
    figures (the message quotes the page)."""
    if c is None:
        return alert.clear_since is None
    if SEVERITY_RANK[c.severity] > SEVERITY_RANK[alert.severity] or alert.clear_since is not None:
        return True
    if count_repeats:
        return alert.last_seen <= cutoff
    return alert.message != c.message[:300]


def _to_write(
    fps: list[str], by_fp: dict[str, Candidate], cutoff: datetime, count_repeats: bool
) -> dict[str, SimpleNamespace]:
    """The active alerts this evaluation writes. An unlocked read drops the quiet repeats from `by_fp`
    (neither locked nor written); on PostgreSQL the rest are locked and read again, so a concurrent
    worker's count, escalation or clear shows before alerts_record decides on them."""
    writes: dict[str, SimpleNamespace] = {}
    for fp, alert in _active(fps, lock=False).items():
        if _writes(alert, by_fp.get(fp), cutoff, count_repeats):
            writes[fp] = alert
        else:
            by_fp.pop(fp, None)
    if not writes or connection.vendor != "postgresql":  # SQLite: one writer at a time
        return writes
    return _active(sorted(writes), lock=True)


def alerts_record(
    *, candidates: list[Candidate], evaluated: set[str], now: datetime, count_repeats: bool = True
) -> list[Raised]:
    """Apply one evaluation in a few statements: one SELECT of the active alerts, one locked SELECT of
    those it writes, one UPDATE for repeats and clears, one INSERT for new alerts and one for transitions.

    `evaluated` holds every fingerprint the evaluation decided; an active one without a candidate is
    clear. `count_repeats=False` (the sweep's re-check) escalates and clears without counting a repeat."""
    by_fp = _strongest(candidates, evaluated)
    fps = sorted(set(by_fp) | evaluated)
    if not fps:
        return []
    cutoff = _tick_cutoff(now)
    raised: list[Raised] = []
    changed: list[SimpleNamespace] = []
    cleared: list[int] = []
    transitions: list[AlertTransition] = []
    for fp, alert in _to_write(fps, by_fp, cutoff, count_repeats).items():
        c = by_fp.pop(fp, None)
        if not _writes(alert, c, cutoff, count_repeats):
            continue  # decided again under the lock: another worker wrote it first
        if c is None:
            cleared.append(alert.id)
            continue
        escalation = _escalation(alert, c, now)
        if escalation is not None:
            transitions.append(escalation)
        if count_repeats:
            alert.occurrences += 1
            alert.last_seen = max(alert.last_seen, now)
        alert.message, alert.details, alert.clear_since = c.message[:300], c.details, None
        changed.append(alert)
        raised.append(Raised(alert.pk, created=False, escalated=escalation is not None))
    update_rows(
        model=Alert,
        key="id",
        objs=changed,
        fields=["severity", "occurrences", "last_seen", "message", "details", "clear_since"],
    )
    if cleared:
        Alert.objects.filter(pk__in=cleared).update(clear_since=now)
    AlertTransition.objects.bulk_create(transitions)
    cooling = _cooling_down(list(by_fp.values()), now)
    new = [c for fp, c in sorted(by_fp.items()) if fp not in cooling]
    if new:
        raised.extend(_insert_new(new, now))
    return raised


def alerts_recheck_active(*, now: datetime) -> list[Raised]:
    """Re-run the rules whose outcome moves with the clock alone: active subject × region alerts (a high
    demand becoming sustained escalates). Student and tutor rules read snapshots, which change only when a
    batch or the stale refresh rewrites them, and both run the rules then; re-reading every snapshot with
    an active alert each sweep would cost a read per alert per sweep and change nothing."""
    cells: set[tuple[str, str]] = set()
    rows = Alert.objects.filter(status__in=ACTIVE_STATUSES, entity_type=EntityType.SUBJECT_REGION)
    for entity_id in rows.values_list("entity_id", flat=True).distinct():
        cell = cell_parse(entity_id)
        if cell is not None:
            cells.add(cell)
    candidates, evaluated = _candidates(students=(), tutors=(), subject_regions=cells, now=now)
    return alerts_record(candidates=candidates, evaluated=evaluated, now=now, count_repeats=False)


def alerts_auto_resolve(*, now: datetime) -> list[int]:
    """Resolve active alerts whose condition has been clear for ALERT_AUTO_RESOLVE_MINUTES (by nobody,
    note "auto-resolved"); the caller (pipeline.periodic) pushes the ids to open dashboards."""
    cutoff = now - timedelta(minutes=settings.ALERT_AUTO_RESOLVE_MINUTES)
    resolved: list[int] = []
    with transaction.atomic():
        due = Alert.objects.filter(status__in=ACTIVE_STATUSES, clear_since__lte=cutoff)
        transitions = []
        for pk, status in due.order_by("pk").values_list("pk", "status"):
            # Conditional update: a concurrent acknowledge, resolve or repeat wins over the sweep.
            if Alert.objects.filter(pk=pk, status=status, clear_since__lte=cutoff).update(
                status=Status.RESOLVED, closed_at=now, closed_by=None
            ):
                resolved.append(pk)
                transitions.append(
                    AlertTransition(
                        alert_id=pk,
                        at=now,
                        by=None,
                        from_status=status,
                        to_status=Status.RESOLVED,
                        note=AUTO_RESOLVED,
                    )
                )
        AlertTransition.objects.bulk_create(transitions)
    if resolved:
        logger.info("alerts auto-resolved", extra={"count": len(resolved)})
    return resolved


_ALLOWED = {
    "acknowledge": ({Status.OPEN}, Status.ACKNOWLEDGED),
    "resolve": ({Status.OPEN, Status.ACKNOWLEDGED}, Status.RESOLVED),
    "dismiss": ({Status.OPEN, Status.ACKNOWLEDGED}, Status.DISMISSED),
}


@transaction.atomic
def alert_transition(
    *, alert_id: int, action: str, user, now: datetime, reason: str = "", api_key: str = ""
) -> Alert:
    """`user` (a staff session) or `api_key` (the label of the key that acted through the API) is
    recorded on the alert and on its transition row."""
    allowed_from, to_status = _ALLOWED[action]
    alert = Alert.objects.select_for_update().get(pk=alert_id)
    if alert.status not in allowed_from:
        raise TransitionNotAllowed(f"cannot {action} an alert that is {alert.status}")
    if action == "dismiss" and not reason.strip():
        raise ValueError("a reason is required to dismiss")
    from_status = alert.status
    alert.status = to_status
    if action == "acknowledge":
        alert.acknowledged_at, alert.acknowledged_by, alert.acknowledged_by_key = now, user, api_key
    else:
        alert.closed_at, alert.closed_by, alert.closed_by_key = now, user, api_key
        alert.dismiss_reason = reason.strip()[:500]
    alert.save()
    AlertTransition.objects.create(
        alert=alert,
        at=now,
        by=user,
        by_key=api_key,
        from_status=from_status,
        to_status=to_status,
        note=reason.strip()[:500],
    )
    label_record(alert=alert, action=action, reason=reason, user=user, api_key=api_key, now=now)  # feedback
    # Every open dashboard swaps the row once the change is committed, whoever made it (page, API, admin).
    transaction.on_commit(lambda: realtime.publish_change(realtime.Change(alerts_updated=[alert.pk])))
    return alert


def _claim_rate_minute(minute: datetime) -> bool:
    """True for exactly one sweep per minute, whichever worker or process runs it (a unique row,
    inserted in the sweep's transaction: a concurrent sweep waits for it, then sees it taken)."""
    from alerts.models import RateMinute

    RateMinute.objects.filter(minute__lt=minute - timedelta(days=1)).delete()
    try:
        with transaction.atomic():
            RateMinute.objects.create(minute=minute)
    except IntegrityError:
        return False
    return True


def alerts_rate_pass(*, now: datetime) -> list[Raised]:
    """Rate anomalies for the minute that just ended, judged by exactly one sweep whichever worker runs
    it (`_claim_rate_minute`). Call inside the sweep's transaction."""
    from alerts.anomaly import rate_candidates

    minute = now.replace(second=0, microsecond=0) - timedelta(minutes=1)
    if not _claim_rate_minute(minute):
        return []
    candidates, evaluated, _ = rate_candidates(now=now)
    return alerts_record(candidates=candidates, evaluated=evaluated, now=now)
