"""Alert writes: raise (deduplicated by fingerprint), evaluate rules for touched entities, transitions."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, transaction

from alerts.models import ACTIVE_STATUSES, SEVERITY_RANK, Alert, AlertTransition, Status
from alerts.rules import Candidate, student_rules
from metrics.models import StudentSnapshot

logger = logging.getLogger(__name__)


class TransitionNotAllowed(Exception):
    """The lifecycle does not allow this change (answered with 409)."""


@dataclass(frozen=True)
class Raised:
    alert_id: int
    created: bool
    escalated: bool


def alert_raise(*, candidate: Candidate, now: datetime) -> Raised:
    """Open an alert for this fingerprint, or count a repeat on the active one (escalating severity)."""
    for _attempt in range(3):
        active = (
            Alert.objects.select_for_update()
            .filter(fingerprint=candidate.fingerprint, status__in=ACTIVE_STATUSES)
            .first()
        )
        if active is not None:
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
            active.message = candidate.message
            active.details = candidate.details
            active.save(update_fields=["severity", "occurrences", "last_seen", "message", "details"])
            return Raised(active.pk, created=False, escalated=escalated)
        try:
            with transaction.atomic():
                alert = Alert.objects.create(
                    fingerprint=candidate.fingerprint,
                    type=candidate.type,
                    severity=candidate.severity,
                    entity_type=candidate.entity_type,
                    entity_id=candidate.entity_id,
                    message=candidate.message,
                    details=candidate.details,
                    first_seen=now,
                    last_seen=now,
                )
                AlertTransition.objects.create(alert=alert, at=now, to_status=Status.OPEN, note="raised")
        except IntegrityError:
            continue  # another worker opened it a moment ago: count ours as a repeat
        logger.info(
            "alert raised", extra={"alert_id": alert.pk, "type": alert.type, "severity": alert.severity}
        )
        return Raised(alert.pk, created=True, escalated=False)
    raise RuntimeError(f"could not raise alert {candidate.fingerprint}")


def alerts_evaluate(*, students: set[str], now: datetime) -> list[Raised]:
    """Run the rules over the snapshots of touched entities. Call inside the batch transaction."""
    raised: list[Raised] = []
    if students:
        for snap in StudentSnapshot.objects.filter(student_id__in=sorted(students)):
            for candidate in student_rules(snap):
                raised.append(alert_raise(candidate=candidate, now=now))
    return raised


_ALLOWED = {
    "acknowledge": ({Status.OPEN}, Status.ACKNOWLEDGED),
    "resolve": ({Status.OPEN, Status.ACKNOWLEDGED}, Status.RESOLVED),
    "dismiss": ({Status.OPEN, Status.ACKNOWLEDGED}, Status.DISMISSED),
}


@transaction.atomic
def alert_transition(*, alert_id: int, action: str, user, now: datetime, reason: str = "") -> Alert:
    allowed_from, to_status = _ALLOWED[action]
    alert = Alert.objects.select_for_update().get(pk=alert_id)
    if alert.status not in allowed_from:
        raise TransitionNotAllowed(f"cannot {action} an alert that is {alert.status}")
    if action == "dismiss" and not reason.strip():
        raise ValueError("reason")
    from_status = alert.status
    alert.status = to_status
    if action == "acknowledge":
        alert.acknowledged_at, alert.acknowledged_by = now, user
    else:
        alert.closed_at, alert.closed_by = now, user
        alert.dismiss_reason = reason.strip()[:500]
    alert.save()
    AlertTransition.objects.create(
        alert=alert, at=now, by=user, from_status=from_status, to_status=to_status, note=reason.strip()[:500]
    )
    return alert
