"""Read side of the dashboard and the read API: KPIs over a range, recent alerts."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db.models import Avg, Count, Q, Sum

from alerts.models import ACTIVE_STATUSES, Alert
from metrics.models import GlobalMinute, Session, StudentHourly, StudentSnapshot

RANGES = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
DEFAULT_RANGE = "24h"
KPI_NAMES = (
    "events_per_min",
    "sessions_today",
    "active_students",
    "ib_calls_24h",
    "avg_health",
    "students_at_risk",
    "open_alerts",
    "sessions_started",
    "sessions_completed",
    "ib_calls",
    "first_session_success_rate",
)


def parse_range(value: str | None) -> str:
    return value if value in RANGES else DEFAULT_RANGE


def _minute_sums(start: datetime, end: datetime) -> dict[str, int]:
    agg = GlobalMinute.objects.filter(minute__gte=start, minute__lt=end).aggregate(
        received=Sum("received", default=0),
        sessions_started=Sum("sessions_started", default=0),
        sessions_completed=Sum("sessions_completed", default=0),
        ib_calls=Sum("ib_calls", default=0),
    )
    return {k: int(v or 0) for k, v in agg.items()}


def kpis(*, range_key: str, now: datetime) -> dict[str, Any]:
    span = RANGES[parse_range(range_key)]
    start = now - span
    current = _minute_sums(start, now + timedelta(minutes=1))
    previous = _minute_sums(start - span, start)
    last5 = _minute_sums(now - timedelta(minutes=5), now + timedelta(minutes=1))
    prev5 = _minute_sums(now - timedelta(minutes=10), now - timedelta(minutes=5))
    day = _minute_sums(now - timedelta(hours=24), now + timedelta(minutes=1))
    prev_day = _minute_sums(now - timedelta(hours=48), now - timedelta(hours=24))
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    sessions_today = Session.objects.filter(
        Q(started_at__gte=midnight) | Q(completed_at__gte=midnight)
    ).count()
    active_students = (
        StudentHourly.objects.filter(hour__gte=start.replace(minute=0, second=0, microsecond=0))
        .values("student_id")
        .distinct()
        .count()
    )
    recent = StudentSnapshot.objects.filter(
        updated_at__gte=now - timedelta(days=30), health_score__isnull=False
    )
    health = recent.aggregate(avg=Avg("health_score"), at_risk=Count("id", filter=Q(health_score__lt=70)))
    firsts = StudentSnapshot.objects.filter(first_session_at__gte=start).aggregate(
        total=Count("id"), ok=Count("id", filter=Q(first_session_ok=True))
    )
    by_severity = dict(
        Alert.objects.filter(status__in=ACTIVE_STATUSES).values_list("severity").annotate(n=Count("id"))
    )
    return {
        "range": parse_range(range_key),
        "as_of": now.isoformat(),
        "events_per_min": round(last5["received"] / 5, 1),
        "events_per_min_prev": round(prev5["received"] / 5, 1),
        "events_in_range": current["received"],
        "sessions_today": sessions_today,
        "active_students": active_students,
        "ib_calls_24h": day["ib_calls"],
        "ib_calls_24h_prev": prev_day["ib_calls"],
        "avg_health": round(health["avg"], 1) if health["avg"] is not None else None,
        "students_at_risk": health["at_risk"],
        "open_alerts": sum(by_severity.values()),
        "open_alerts_by_severity": {s: by_severity.get(s, 0) for s in ("critical", "warning", "info")},
        "sessions_started": current["sessions_started"],
        "sessions_started_prev": previous["sessions_started"],
        "sessions_completed": current["sessions_completed"],
        "sessions_completed_prev": previous["sessions_completed"],
        "ib_calls": current["ib_calls"],
        "ib_calls_prev": previous["ib_calls"],
        "first_session_success_rate": round(firsts["ok"] / firsts["total"], 3) if firsts["total"] else None,
    }


def events_series(*, now: datetime, minutes: int = 60) -> list[dict[str, Any]]:
    start = (now - timedelta(minutes=minutes - 1)).replace(second=0, microsecond=0)
    rows = dict(
        GlobalMinute.objects.filter(minute__gte=start, minute__lte=now).values_list("minute", "received")
    )
    return [
        {
            "t": (start + timedelta(minutes=i)).strftime("%H:%M"),
            "v": rows.get(start + timedelta(minutes=i), 0),
        }
        for i in range(minutes)
    ]


def recent_alerts(*, limit: int = 50) -> list[Alert]:
    return list(Alert.objects.order_by("-last_seen", "-id")[:limit])
