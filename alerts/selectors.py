from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from alerts.models import Alert, AlertTransition


def alert_as_dict(alert: Alert) -> dict[str, Any]:
    return {
        "id": alert.pk,
        "type": alert.type,
        "severity": alert.severity,
        "status": alert.status,
        "entity_type": alert.entity_type,
        "entity_id": alert.entity_id,
        "message": alert.message,
        "details": alert.details,
        "occurrences": alert.occurrences,
        "first_seen": alert.first_seen.isoformat(),
        "last_seen": alert.last_seen.isoformat(),
        "acknowledged_at": alert.acknowledged_at.isoformat() if alert.acknowledged_at else None,
        "acknowledged_by": alert.acknowledged_by.get_username() if alert.acknowledged_by else None,
        "closed_at": alert.closed_at.isoformat() if alert.closed_at else None,
        "closed_by": alert.closed_by.get_username() if alert.closed_by else None,
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
            "by": t.by.get_username() if t.by else None,
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
