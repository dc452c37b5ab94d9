"""Reads of alerts: the API's shape and list, the feed's order and cursor, the dashboard's alert counts."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import Case, Count, IntegerField, Q, QuerySet, Value, When

from alerts.models import ACTIVE_STATUSES, SEVERITY_RANK, Alert, AlertTransition

SEVERITIES = ("critical", "warning", "info")  # most severe first
# Fields shown as stored, in the order of the shape.
_AS_IS = ("type", "severity", "status", "entity_type", "entity_id", "message", "details", "occurrences")


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _username(user: Any) -> str | None:
    return user.get_username() if user else None


def alert_as_dict(alert: Alert) -> dict[str, Any]:
    return {
        "id": alert.pk,
        **{name: getattr(alert, name) for name in _AS_IS},
        "first_seen": alert.first_seen.isoformat(),
        "last_seen": alert.last_seen.isoformat(),
        "acknowledged_at": _iso(alert.acknowledged_at),
        "acknowledged_by": _username(alert.acknowledged_by),
        "closed_at": _iso(alert.closed_at),
        "closed_by": _username(alert.closed_by),
        "acknowledged_by_key": alert.acknowledged_by_key or None,
        "closed_by_key": alert.closed_by_key or None,
        "dismiss_reason": alert.dismiss_reason or None,
    }


def alert_history(*, alert_id: int) -> list[dict[str, Any]] | None:
    """The alert's transitions, oldest first (who acted: a user or an API key); None for no such alert."""
    if not Alert.objects.filter(pk=alert_id).exists():
        return None
    return [
        {
            "at": t.at.isoformat(),
            "from_status": t.from_status or None,
            "to_status": t.to_status,
            "by": _username(t.by),
            "by_key": t.by_key or None,
            "note": t.note,
        }
        for t in AlertTransition.objects.filter(alert_id=alert_id).select_related("by").order_by("at", "id")
    ]


def alerts_filtered(*, filters: dict[str, Any], q: str | None = None, statuses=None) -> QuerySet[Alert]:
    """The alerts the list's filters keep: exact fields, `q` (entity id or message contains it, any
    case) and `statuses` (several at once, as the dashboard's "active")."""
    qs = Alert.objects.select_related("acknowledged_by", "closed_by").filter(
        **{k: v for k, v in filters.items() if v}
    )
    if statuses:
        qs = qs.filter(status__in=statuses)
    if q:
        qs = qs.filter(Q(entity_id__icontains=q) | Q(message__icontains=q))
    return qs


def alert_list(
    *, filters: dict[str, str | None], before_id: int | None, limit: int, q: str | None = None
) -> tuple[list[Alert], bool]:
    """Newest first. `q`: the entity id or the message contains it, case-insensitive (a scan bounded by
    the page's LIMIT along the primary key, with the other filters narrowing it first)."""
    qs = alerts_filtered(filters=filters, q=q)
    if before_id is not None:
        qs = qs.filter(pk__lt=before_id)
    rows = list(qs.order_by("-id")[: limit + 1])
    return rows[:limit], len(rows) > limit


def alert_get(*, alert_id: int) -> Alert | None:
    """One alert with the users who acknowledged and closed it."""
    return Alert.objects.select_related("acknowledged_by", "closed_by").filter(pk=alert_id).first()


def alert_transitions(alert: Alert) -> list[Any]:
    return list(alert.transitions.select_related("by").order_by("at", "id"))


def alerts_by_ids(*, ids: list[int]) -> QuerySet[Alert]:
    return Alert.objects.filter(pk__in=ids).order_by("last_seen", "id")


def entity_alerts(*, entity_type: str, entity_id: str) -> QuerySet[Alert]:
    """An entity's alerts, the most recently seen first."""
    return Alert.objects.filter(entity_type=entity_type, entity_id=entity_id).order_by("-last_seen")


def alert_counts(*, since: datetime, span: timedelta) -> dict[str, Any]:
    """The KPI strip's alert figures: active alerts by severity (most severe first), alerts first
    seen since `since` and in the span before it."""
    active_q = Q(status__in=ACTIVE_STATUSES)
    counts = Alert.objects.filter(active_q | Q(first_seen__gte=since - span)).aggregate(
        **{s: Count("id", filter=active_q & Q(severity=s)) for s in SEVERITIES},
        new=Count("id", filter=Q(first_seen__gte=since)),
        new_prev=Count("id", filter=Q(first_seen__gte=since - span, first_seen__lt=since)),
    )
    return {
        "by_severity": {s: counts[s] for s in SEVERITIES},
        "new": counts["new"],
        "new_prev": counts["new_prev"],
    }


# --- the feed's order: most severe first, then the most recently seen --------------------------

_SEVERITY_ORDER = Case(
    *(When(severity=s, then=Value(rank)) for s, rank in SEVERITY_RANK.items()), output_field=IntegerField()
)


class BadFeedCursor(ValueError):
    pass


def _feed_cursor(alert: Alert) -> str:
    key = [SEVERITY_RANK[alert.severity], alert.last_seen.isoformat(), alert.pk]
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


def _decode_feed_cursor(cursor: str) -> tuple[int, datetime, int]:
    """(severity rank, last_seen, id) of the row a feed cursor names; BadFeedCursor for anything else."""
    try:
        rank, seen, pk = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        seen = datetime.fromisoformat(seen)
        if (
            type(rank) is not int
            or rank not in SEVERITY_RANK.values()
            or type(pk) is not int
            or not 0 <= pk < 2**63
            or seen.tzinfo is None
        ):
            raise TypeError
        seen.astimezone(UTC)  # OverflowError: no UTC instant
    except (ValueError, TypeError, OverflowError, UnicodeDecodeError):
        raise BadFeedCursor("invalid cursor") from None
    return rank, seen, pk


def alerts_page_by_severity(
    qs: QuerySet[Alert], *, cursor: str | None, limit: int
) -> tuple[list[Alert], str | None]:
    """One page of `qs`, most severe first, then the most recently seen; the cursor (opaque, the last
    row's severity, last_seen and id) continues after the last row, however the rows move."""
    ranked = qs.annotate(severity_rank=_SEVERITY_ORDER)
    if cursor:
        rank, seen, pk = _decode_feed_cursor(cursor)
        ranked = ranked.filter(
            Q(severity_rank__lt=rank)
            | Q(severity_rank=rank, last_seen__lt=seen)
            | Q(severity_rank=rank, last_seen=seen, pk__lt=pk)
        )
    rows: list[Alert] = list(ranked.order_by("-severity_rank", "-last_seen", "-id")[: limit + 1])
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], _feed_cursor(rows[limit - 1])
