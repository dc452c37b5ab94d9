from __future__ import annotations

from typing import Any

from alerts.models import Alert


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
        "dismiss_reason": alert.dismiss_reason or None,
    }


def alert_list(
    *, filters: dict[str, str | None], before_id: int | None, limit: int
) -> tuple[list[Alert], bool]:
    qs = Alert.objects.select_related("acknowledged_by", "closed_by").filter(
        **{k: v for k, v in filters.items() if v}
    )
    if before_id is not None:
        qs = qs.filter(pk__lt=before_id)
    rows = list(qs.order_by("-id")[: limit + 1])
    return rows[:limit], len(rows) > limit
