"""The dashboard's figures read from metrics' tables: the KPI counts over a range and the chart series.

Every function runs a fixed number of queries whatever the number of rows (aggregates in the
database, never a query per row). Ranges and their windows are the dashboard's (dashboard/selectors.py);
these take datetimes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from django.conf import settings
from django.db.models import Avg, Count, Q, QuerySet, Sum
from django.db.models.functions import TruncDay, TruncHour
from django.utils import timezone

from metrics.models import GlobalMinute, Session, StudentHourly, StudentSnapshot, SubjectRegionSnapshot
from metrics.selectors import data_coverage_start
from metrics.vocabulary import IB_REASONS

TRAFFIC_COLUMNS = ("received", "sessions_started", "sessions_completed", "ib_calls")
BucketUnit = Literal["minute", "hour", "day"]


def _between(field: str, start: datetime, end: datetime) -> Q:
    return Q(**{f"{field}__gte": start, f"{field}__lt": end})


def _floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


# --- KPIs -------------------------------------------------------------------------------------


def active_students(*, since: datetime) -> QuerySet:
    """Ids of the students with any activity (a session, a call, a health reading) in a bucket from the
    hour of `since` on: the "active students" of a range."""
    return StudentHourly.objects.filter(hour__gte=_floor_hour(since)).values("student_id").distinct()


def students_at_risk(*, since: datetime, below: float) -> QuerySet:
    """The one at-risk set: students active since `since` whose health score is below `below` (the
    runtime ALERT_LOW_HEALTH_WARNING, alerts.thresholds; a student with no score yet is never at risk)."""
    return StudentSnapshot.objects.filter(student_id__in=active_students(since=since), health_score__lt=below)


def health_overview(*, since: datetime, at_risk_below: float, critical_below: float) -> dict[str, Any]:
    """Among the students active since `since`: how many, how many at risk, critical, not scored yet,
    and their mean score — the KPI card's figures, all over the same set. The cuts are the runtime
    thresholds (alerts.thresholds), which the caller reads."""
    qs = StudentSnapshot.objects.filter(student_id__in=active_students(since=since))
    agg = qs.aggregate(
        scored=Count("id", filter=Q(health_score__isnull=False)),
        unscored=Count("id", filter=Q(health_score__isnull=True)),
        at_risk=Count("id", filter=Q(health_score__lt=at_risk_below)),
        critical=Count("id", filter=Q(health_score__lt=critical_below)),
        avg=Avg("health_score"),
    )
    return {**agg, "avg": round(agg["avg"], 1) if agg["avg"] is not None else None}


def traffic_totals(*, windows: dict[str, tuple[datetime, datetime]]) -> dict[str, dict[str, int]]:
    """{window: {column: sum}} of the per-minute series (TRAFFIC_COLUMNS) over each [start, end)
    window, in one scan of the series."""
    agg = GlobalMinute.objects.filter(
        minute__gte=min(a for a, _ in windows.values()), minute__lt=max(b for _, b in windows.values())
    ).aggregate(
        **{
            f"{name}__{col}": Sum(col, filter=_between("minute", a, b), default=0)
            for name, (a, b) in windows.items()
            for col in TRAFFIC_COLUMNS
        }
    )
    return {name: {col: int(agg[f"{name}__{col}"] or 0) for col in TRAFFIC_COLUMNS} for name in windows}


def sessions_today(*, now: datetime) -> dict[str, Any]:
    """Sessions started or completed since midnight, and yesterday up to the same time; "Today" starts
    at midnight in the display zone (the request's or socket's active zone): `since`."""
    midnight = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
    yesterday = midnight - timedelta(days=1)
    same_time_yesterday = now - timedelta(days=1)
    counts = Session.objects.filter(Q(started_at__gte=yesterday) | Q(completed_at__gte=yesterday)).aggregate(
        today=Count("id", filter=Q(started_at__gte=midnight) | Q(completed_at__gte=midnight)),
        yesterday=Count(
            "id",
            filter=_between("started_at", yesterday, same_time_yesterday)
            | _between("completed_at", yesterday, same_time_yesterday),
        ),
    )
    return {**counts, "since": midnight}


def active_student_counts(*, since: datetime, span: timedelta) -> tuple[int, int]:
    """How many students were active since `since`, and in the span before it."""
    hour0 = _floor_hour(since)
    before = (
        StudentHourly.objects.filter(hour__gte=hour0 - span, hour__lt=hour0)
        .values("student_id")
        .distinct()
        .count()
    )
    return active_students(since=since).count(), before


def first_session_success_rate(*, since: datetime, now: datetime) -> float | None:
    """The share of first sessions since `since` that went well, None without any.

    Only sessions known to be firsts (a month of our own data before them): on a fresh install every
    established student's next session would otherwise count as a first."""
    coverage = data_coverage_start()
    known_from = coverage + timedelta(days=settings.FIRST_SESSION_LOOKBACK_DAYS) if coverage else now
    firsts = StudentSnapshot.objects.filter(first_session_at__gte=max(since, known_from)).aggregate(
        total=Count("id"), ok=Count("id", filter=Q(first_session_ok=True))
    )
    return round(firsts["ok"] / firsts["total"], 3) if firsts["total"] else None


# --- chart series -----------------------------------------------------------------------------


def events_series(*, now: datetime, minutes: int = 60) -> list[dict[str, Any]]:
    """Events received per minute (by arrival) over the last hour, zero-filled."""
    start = (now - timedelta(minutes=minutes - 1)).replace(second=0, microsecond=0)
    rows = dict(GlobalMinute.objects.filter(minute__gte=start, minute__lte=now).per_minute("received"))
    return [
        {
            "t": timezone.localtime(start + timedelta(minutes=i)).strftime("%H:%M"),
            "v": rows.get(start + timedelta(minutes=i), 0),
        }
        for i in range(minutes)
    ]


def sessions_series(*, starts: list[datetime], unit: BucketUnit, now: datetime) -> dict[str, list[int]]:
    """Sessions started and completed (by event time) per bucket of one minute, hour or day; `starts`
    are the buckets' first instants, oldest first; an empty bucket is 0."""
    qs = GlobalMinute.objects.filter(minute__gte=starts[0], minute__lte=now)
    if unit == "minute":
        rows = {r[0]: r[1:] for r in qs.per_minute("sessions_started", "sessions_completed")}
    else:
        trunc = TruncHour if unit == "hour" else TruncDay
        rows = {
            r[0]: r[1:]
            for r in qs.annotate(bucket=trunc("minute", tzinfo=UTC))  # UTC buckets whatever the display zone
            .values("bucket")
            .annotate(s=Sum("sessions_started"), c=Sum("sessions_completed"))
            .values_list("bucket", "s", "c")
        }
    return {
        "started": [int(rows.get(b, (0, 0))[0] or 0) for b in starts],
        "completed": [int(rows.get(b, (0, 0))[1] or 0) for b in starts],
    }


def ib_calls_by_reason(*, since: datetime) -> dict[str, int]:
    """IB calls per reason in the hour buckets from the hour of `since` on."""
    agg = StudentHourly.objects.filter(hour__gte=_floor_hour(since)).aggregate(
        **{reason: Sum(f"ib_{reason}", default=0) for reason in IB_REASONS}
    )
    return {reason: int(agg[reason] or 0) for reason in IB_REASONS}


def health_distribution(*, now: datetime) -> dict[str, Any]:
    """Students (updated in 30 days) by our health score, in bands of 10."""
    bands = [(lo, lo + 10) for lo in range(0, 100, 10)]
    agg = StudentSnapshot.objects.filter(
        updated_at__gte=now - timedelta(days=30), health_score__isnull=False
    ).aggregate(
        **{
            f"b{lo}": Count(
                "id",
                filter=Q(health_score__gte=lo) & (Q(health_score__lt=hi) if hi < 100 else Q()),
            )
            for lo, hi in bands
        }
    )
    return {"labels": [f"{lo}–{hi}" for lo, hi in bands], "counts": [agg[f"b{lo}"] for lo, _ in bands]}


def supply_demand_by_subject(*, limit: int = 12) -> dict[str, Any]:
    """Mean platform demand and supply scores per subject across regions, most demanded first."""
    rows = list(
        SubjectRegionSnapshot.objects.values("subject")
        .annotate(
            demand=Avg("platform_demand_score"),
            supply=Avg("platform_supply_score"),
            short=Count("id", filter=Q(balance_status="high_demand")),
        )
        .order_by("-demand", "subject")[:limit]
    )
    return {
        "labels": [r["subject"] for r in rows],
        "demand": [round(r["demand"], 1) if r["demand"] is not None else None for r in rows],
        "supply": [round(r["supply"], 1) if r["supply"] is not None else None for r in rows],
        "short": [r["short"] for r in rows],
    }
