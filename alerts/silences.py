"""Silences (issue 19): mute the notifications of matching alerts for a period, as Alertmanager does.

A silence matches an alert when every matcher it sets matches: the alert type, the entity (type and id),
the subject × region cell (an alert about that cell). A silenced alert is still raised, recorded and shown
(muted) in the feed; only its deliveries are held back (alerts/delivery.py marks them `silenced`). A
silence is active while starts_at <= now < ends_at: it expires by itself, and expiring it early sets
ends_at to now.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.db.models import BooleanField, Case, Q, QuerySet, Value, When

from alerts.models import ACTIVE_STATUSES, Alert, AlertType, EntityType, Silence
from iops.lib.text import unstorable_text
from metrics.vocabulary import cell_parse

logger = logging.getLogger(__name__)

# The longest a silence may last: a forgotten silence must not mute an alert type for ever.
MAX_DURATION = timedelta(days=90)
SNOOZE = timedelta(hours=4)
# The model's max_length of each free-text field, checked before the database sees the value.
TEXT_LIMITS = {"entity_id": 200, "cell": 200, "reason": 500}


class SilenceInvalid(ValueError):
    """The fields at fault, as (field, message) pairs."""

    def __init__(self, errors: list[tuple[str, str]]):
        super().__init__("; ".join(f"{f}: {m}" for f, m in errors))
        self.errors = errors


def silence_errors(silence: Silence) -> list[tuple[str, str]]:
    """What is wrong with a silence's fields, as (field, message); empty when it can be saved."""
    errors: list[tuple[str, str]] = []
    if not (silence.alert_type or silence.entity_type or silence.entity_id or silence.cell):
        errors.append(("matchers", "set at least one of alert_type, entity_type + entity_id, cell"))
    if silence.alert_type and silence.alert_type not in AlertType.values:
        errors.append(("alert_type", f"unknown alert type; known: {', '.join(AlertType.values)}"))
    if silence.entity_type and silence.entity_type not in EntityType.values:
        errors.append(("entity_type", f"unknown entity type; known: {', '.join(EntityType.values)}"))
    if bool(silence.entity_type) != bool(silence.entity_id):
        field = "entity_id" if silence.entity_type else "entity_type"
        errors.append((field, "entity_type and entity_id go together"))
    if silence.cell and cell_parse(silence.cell) is None:
        errors.append(("cell", 'a subject × region cell such as "Mathematics|west"'))
    for field, limit in TEXT_LIMITS.items():
        value = getattr(silence, field) or ""
        problem = unstorable_text(value)
        if problem is not None:
            errors.append((field, problem))
        elif len(value) > limit:
            errors.append((field, f"at most {limit} characters"))
    if not (silence.reason or "").strip():
        errors.append(("reason", "is required"))
    if silence.starts_at and silence.ends_at:
        if silence.ends_at <= silence.starts_at:
            errors.append(("ends_at", "must be after starts_at"))
        elif silence.ends_at - silence.starts_at > MAX_DURATION:
            errors.append(("ends_at", f"a silence lasts at most {MAX_DURATION.days} days"))
    return errors


def silence_create(
    *,
    reason: str,
    ends_at: datetime,
    now: datetime,
    starts_at: datetime | None = None,
    alert_type: str = "",
    entity_type: str = "",
    entity_id: str = "",
    cell: str = "",
    user=None,
    api_key: str = "",
) -> Silence:
    """A new silence; SilenceInvalid naming the fields at fault."""
    silence = Silence(
        alert_type=alert_type or "",
        entity_type=entity_type or "",
        entity_id=entity_id or "",
        cell=cell or "",
        starts_at=starts_at or now,
        ends_at=ends_at,
        reason=(reason or "").strip(),
        created_by=user if getattr(user, "pk", None) else None,
        created_by_key=api_key,
        created_at=now,
    )
    errors = silence_errors(silence)
    if not errors and silence.ends_at <= now:
        errors.append(("ends_at", "must be in the future"))
    if errors:
        raise SilenceInvalid(errors)
    silence.save()
    logger.info("silence created", extra={"silence_id": silence.pk, "matchers": silence.matchers_label()})
    return silence


def silence_expire(*, silence: Silence, now: datetime) -> Silence:
    """End a silence now (no-op when it has already ended)."""
    if silence.ends_at > now:
        Silence.objects.filter(pk=silence.pk, ends_at__gt=now).update(ends_at=now)
        silence.refresh_from_db()
        logger.info("silence expired", extra={"silence_id": silence.pk})
    return silence


def silences_active(*, now: datetime) -> QuerySet[Silence]:
    return Silence.objects.filter(starts_at__lte=now, ends_at__gt=now)


def silence_matches(silence: Silence, alert: Alert) -> bool:
    if silence.alert_type and alert.type != silence.alert_type:
        return False
    if silence.entity_type and (alert.entity_type, alert.entity_id) != (
        silence.entity_type,
        silence.entity_id,
    ):
        return False
    return not silence.cell or (alert.entity_type, alert.entity_id) == (
        EntityType.SUBJECT_REGION,
        silence.cell,
    )


def silence_q(silence: Silence) -> Q:
    """The alerts a silence matches, as a filter."""
    q = Q()
    if silence.alert_type:
        q &= Q(type=silence.alert_type)
    if silence.entity_type:
        q &= Q(entity_type=silence.entity_type, entity_id=silence.entity_id)
    if silence.cell:
        q &= Q(entity_type=EntityType.SUBJECT_REGION, entity_id=silence.cell)
    return q


def silence_alert_ids(silence: Silence, *, limit: int = 200) -> list[int]:
    """Active alerts a silence matches (the feed rows to re-render muted or unmuted), newest first."""
    q = silence_q(silence)
    if not q:
        return []
    qs = Alert.objects.filter(q, status__in=ACTIVE_STATUSES).order_by("-last_seen")
    return list(qs.values_list("pk", flat=True)[:limit])


def silences_turned_alert_ids(*, since: datetime, now: datetime) -> list[int]:
    """Active alerts whose muting changed by the clock alone in (since, now]: a silence that began or
    ended in that span (the sweep pushes these rows, so open dashboards unmute them without a reload)."""
    turned = Silence.objects.filter(
        Q(ends_at__gt=since, ends_at__lte=now) | Q(starts_at__gt=since, starts_at__lte=now)
    )
    return sorted({pk for silence in turned for pk in silence_alert_ids(silence)})


def silences_for(alerts: Iterable[Alert], *, now: datetime) -> dict[int, Silence]:
    """{alert id: the active silence that mutes it} for these alerts (the one ending last)."""
    active = list(silences_active(now=now).order_by("-ends_at", "-id"))
    found: dict[int, Silence] = {}
    if not active:
        return found
    for alert in alerts:
        for silence in active:
            if silence_matches(silence, alert):
                found[alert.pk] = silence
                break
    return found


def with_muted(qs: QuerySet[Alert], *, now: datetime) -> QuerySet[Alert]:
    """Each alert's `muted`: whether an active silence matches it now (one CASE over the few silences)."""
    matchers = [q for q in (silence_q(s) for s in silences_active(now=now)) if q]
    if not matchers:
        return qs.annotate(muted=Value(False, output_field=BooleanField()))
    any_match = Q()
    for q in matchers:
        any_match |= q
    return qs.annotate(muted=Case(When(any_match, then=Value(True)), default=Value(False)))


def silence_state(silence: Silence, *, now: datetime) -> str:
    if silence.ends_at <= now:
        return "expired"
    return "active" if silence.starts_at <= now else "pending"


def silence_as_dict(silence: Silence, *, now: datetime) -> dict[str, Any]:
    return {
        "id": silence.pk,
        "alert_type": silence.alert_type or None,
        "entity_type": silence.entity_type or None,
        "entity_id": silence.entity_id or None,
        "cell": silence.cell or None,
        "starts_at": silence.starts_at.isoformat(),
        "ends_at": silence.ends_at.isoformat(),
        "reason": silence.reason,
        "created_by": silence.created_by.get_username() if silence.created_by else None,
        "created_by_key": silence.created_by_key or None,
        "created_at": silence.created_at.isoformat(),
        "state": silence_state(silence, now=now),
    }


def silence_list(*, state: str | None, now: datetime, limit: int = 200) -> list[Silence]:
    """Silences, latest ending first: `active` (now within), `expired`, `pending` (starting later), or all."""
    qs = Silence.objects.select_related("created_by")
    if state == "active":
        qs = qs.filter(starts_at__lte=now, ends_at__gt=now)
    elif state == "expired":
        qs = qs.filter(ends_at__lte=now)
    elif state == "pending":
        qs = qs.filter(starts_at__gt=now)
    return list(qs[:limit])
