"""Reads of snapshots for the API and the entity pages: lists with keyset pagination, one entity,
its daily history from the hourly buckets, subject × region rows."""

from __future__ import annotations

import base64
import json
import math
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import Avg, Count, F, Model, Q, QuerySet

from iops.lib.text import unstorable_text
from metrics.burnout import burnout_level
from metrics.models import (
    StudentHourly,
    StudentSnapshot,
    SubjectRegionSnapshot,
    TutorHourly,
    TutorSnapshot,
)
from metrics.vocabulary import IB_REASONS, cell_key, cell_parse

ENTITY_MODELS: dict[str, tuple[type[Model], str]] = {
    "student": (StudentSnapshot, "student_id"),
    "tutor": (TutorSnapshot, "tutor_id"),
}
ORDERABLE = {
    "student": (
        "health_score",
        "-health_score",
        "sessions_7d",
        "-sessions_7d",
        "ib_calls_14d",
        "-ib_calls_14d",
        "-days_since_last_session",
        "platform_health_score",
        "-updated_at",
        "updated_at",
        "student_id",
    ),
    "tutor": (
        "avg_rating",
        "-avg_rating",
        "utilisation",
        "-utilisation",
        "-burnout_risk",
        "burnout_risk",
        "sessions_7d",
        "-sessions_7d",
        "-updated_at",
        "updated_at",
        "tutor_id",
    ),
    "subject_region": (
        "-own_ratio",
        "own_ratio",
        "-demand_supply_ratio",
        "demand_supply_ratio",
        "subject",
        "region",
        "-updated_at",
    ),
}
HISTORY_MAX_DAYS = 90


class BadCursor(ValueError):
    pass


def snapshot_as_dict(entity_type: str, obj: Model) -> dict[str, Any]:
    model, key = ENTITY_MODELS[entity_type]
    data: dict[str, Any] = {"entity_type": entity_type, "entity_id": getattr(obj, key)}
    for f in model._meta.concrete_fields:
        if f.name in ("id", key):
            continue
        value = getattr(obj, f.attname)
        data[f.name] = value.isoformat() if hasattr(value, "isoformat") else value
    if entity_type == "tutor":
        data["avg_rating"] = obj.avg_rating
        data["burnout_level"] = burnout_level(obj.burnout_risk)
    return data


def subject_region_key(subject: str, region: str) -> str:
    """The public id of a subject × region row: "Mathematics|west" (url-quote it in a path)."""
    return cell_key(subject, region)


def subject_region_as_dict(obj: SubjectRegionSnapshot) -> dict[str, Any]:
    data: dict[str, Any] = {
        "entity_type": "subject_region",
        "entity_id": subject_region_key(obj.subject, obj.region),
    }
    for f in SubjectRegionSnapshot._meta.concrete_fields:
        if f.name != "id":
            value = getattr(obj, f.attname)
            data[f.name] = value.isoformat() if hasattr(value, "isoformat") else value
    return data


def entity_get(entity_type: str, entity_id: str) -> Model | None:
    model, key = ENTITY_MODELS[entity_type]
    return model.objects.filter(**{key: entity_id}).first()


def subject_region_get(entity_id: str) -> SubjectRegionSnapshot | None:
    cell = cell_parse(entity_id)
    if cell is None:
        return None
    return SubjectRegionSnapshot.objects.filter(subject=cell[0], region=cell[1]).first()


def encode_cursor(value: Any, pk: int) -> str:
    if isinstance(value, datetime):
        value = value.isoformat()
    return base64.urlsafe_b64encode(json.dumps([value, pk]).encode()).decode()


def decode_cursor(cursor: str, *, model: type[Model], field: str) -> tuple[Any, int]:
    """The (value, pk) a cursor names; BadCursor unless the value is one the ordered field can hold and
    the database can compare (a tampered cursor is the client's error, not a 500)."""
    try:
        value, pk = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if type(pk) is not int or not 0 <= pk < 2**63 or isinstance(value, dict | list | bool):
            raise TypeError
        if value is None:  # the last row had no value in the ordered field (a page of the nulls)
            return None, pk
        model_field = model._meta.get_field(field)
        if model_field.get_internal_type() == "DateTimeField":
            value = datetime.fromisoformat(value)
            if value.tzinfo is None:
                raise TypeError
            value = value.astimezone(UTC)  # OverflowError: no UTC date (9999-12-31T23:59:59-23:59)
        value = model_field.to_python(value)
        if isinstance(value, str) and unstorable_text(value) is not None:
            raise TypeError
        if isinstance(value, float) and not math.isfinite(value):
            raise TypeError
    except (ValueError, TypeError, OverflowError, ValidationError):
        raise BadCursor("invalid cursor") from None
    return value, pk


def keyset_page(
    qs: QuerySet, *, order: str, cursor: str | None, limit: int
) -> tuple[list[Model], str | None]:
    """One page ordered by `order` then primary key, continuing after the row the cursor names.
    Rows with no value in the ordered field come last, in either direction (a list "by health" shows
    the students not scored yet after the scored ones; nobody drops out for a missing value)."""
    field = order.lstrip("-")
    desc = order.startswith("-")
    if cursor:
        value, pk = decode_cursor(cursor, model=qs.model, field=field)
        if value is None:
            qs = qs.filter(**{f"{field}__isnull": True, "pk__gt": pk})
        else:
            op = "lt" if desc else "gt"
            qs = qs.filter(
                Q(**{f"{field}__{op}": value})
                | Q(**{field: value, "pk__gt": pk})
                | Q(**{f"{field}__isnull": True})
            )
    ordered = F(field).desc(nulls_last=True) if desc else F(field).asc(nulls_last=True)
    rows = list(qs.order_by(ordered, "pk")[: limit + 1])
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], encode_cursor(getattr(last, field), last.pk)


def data_coverage_start() -> datetime | None:
    """The earliest student hour bucket we hold: how far back our knowledge of students goes."""
    return StudentHourly.objects.order_by("hour").values_list("hour", flat=True).first()


def active_students(*, since: datetime) -> QuerySet:
    """Ids of the students with any activity (a session, a call, a health reading) in a bucket from the
    hour of `since` on: the "active students" of a range."""
    hour0 = since.replace(minute=0, second=0, microsecond=0)
    return StudentHourly.objects.filter(hour__gte=hour0).values("student_id").distinct()


def students_at_risk(*, since: datetime, below: float | None = None) -> QuerySet:
    """The one at-risk set: students active since `since` whose health score is below `below` (the
    caller's runtime ALERT_LOW_HEALTH_WARNING; a student with no score yet is never at risk)."""
    below = settings.ALERT_LOW_HEALTH_WARNING if below is None else below
    return StudentSnapshot.objects.filter(student_id__in=active_students(since=since), health_score__lt=below)


def health_overview(
    *, since: datetime, at_risk_below: float | None = None, critical_below: float | None = None
) -> dict[str, Any]:
    """Among the students active since `since`: how many, how many at risk, critical, not scored yet,
    and their mean score — the KPI card's figures, all over the same set. The cuts are the caller's
    runtime thresholds (alerts.thresholds), the environment's when not given."""
    at_risk_below = settings.ALERT_LOW_HEALTH_WARNING if at_risk_below is None else at_risk_below
    critical_below = settings.ALERT_LOW_HEALTH_CRITICAL if critical_below is None else critical_below
    qs = StudentSnapshot.objects.filter(student_id__in=active_students(since=since))
    agg = qs.aggregate(
        scored=Count("id", filter=Q(health_score__isnull=False)),
        unscored=Count("id", filter=Q(health_score__isnull=True)),
        at_risk=Count("id", filter=Q(health_score__lt=at_risk_below)),
        critical=Count("id", filter=Q(health_score__lt=critical_below)),
        avg=Avg("health_score"),
    )
    return {**agg, "avg": round(agg["avg"], 1) if agg["avg"] is not None else None}


def student_list(
    *,
    order: str,
    limit: int,
    cursor: str | None = None,
    health_below: float | None = None,
    trend: str | None = None,
    churn_risk: str | None = None,
    q: str | None = None,
) -> tuple[list[StudentSnapshot], str | None]:
    qs = students_filtered(health_below=health_below, trend=trend, churn_risk=churn_risk, q=q)
    return keyset_page(qs, order=order, cursor=cursor, limit=limit)


def students_filtered(
    *,
    health_below: float | None = None,
    trend: str | None = None,
    churn_risk: str | None = None,
    q: str | None = None,
) -> QuerySet[StudentSnapshot]:
    """The students the list's filters keep (the list pages them, the CSV export streams them)."""
    qs = StudentSnapshot.objects.all()
    if q:
        qs = qs.filter(student_id__icontains=q)
    if health_below is not None:
        qs = qs.filter(health_score__lt=health_below)
    if trend:
        qs = qs.filter(velocity_trend=trend)
    if churn_risk:
        qs = qs.filter(platform_churn_risk=churn_risk)
    return qs


def tutor_list(
    *,
    order: str,
    limit: int,
    cursor: str | None = None,
    burnout_above: float | None = None,
    utilisation_above: float | None = None,
    region: str | None = None,
    q: str | None = None,
) -> tuple[list[TutorSnapshot], str | None]:
    qs = tutors_filtered(burnout_above=burnout_above, utilisation_above=utilisation_above, region=region, q=q)
    return keyset_page(qs, order=order, cursor=cursor, limit=limit)


def tutors_filtered(
    *,
    burnout_above: float | None = None,
    utilisation_above: float | None = None,
    region: str | None = None,
    q: str | None = None,
) -> QuerySet[TutorSnapshot]:
    """The tutors the list's filters keep (the list pages them, the CSV export streams them)."""
    qs = TutorSnapshot.objects.all()
    if q:
        qs = qs.filter(tutor_id__icontains=q)
    if burnout_above is not None:
        qs = qs.filter(burnout_risk__gt=burnout_above)
    if utilisation_above is not None:
        qs = qs.filter(utilisation__gt=utilisation_above)
    if region:
        qs = qs.filter(region__contains=region)
    return qs


def subject_region_list(
    *,
    order: str,
    limit: int,
    cursor: str | None = None,
    status: str | None = None,
    subject: str | None = None,
    region: str | None = None,
    q: str | None = None,
) -> tuple[list[SubjectRegionSnapshot], str | None]:
    qs = SubjectRegionSnapshot.objects.all()
    if q:
        qs = qs.filter(Q(subject__icontains=q) | Q(region__icontains=q))
    if status:
        qs = qs.filter(balance_status=status)
    if subject:
        qs = qs.filter(subject=subject)
    if region:
        qs = qs.filter(region=region)
    return keyset_page(qs, order=order, cursor=cursor, limit=limit)


def entity_history(*, entity_type: str, entity_id: str, days: int, now: datetime) -> list[dict[str, Any]]:
    """Daily series (UTC days, oldest first, today included, empty days as zeros) from hourly buckets."""
    model, key = (StudentHourly, "student_id") if entity_type == "student" else (TutorHourly, "tutor_id")
    first = now.date() - timedelta(days=days - 1)
    start = datetime.combine(first, datetime.min.time(), tzinfo=now.tzinfo)
    counters = [
        "sessions_started",
        "sessions_completed",
        "sessions_unsuccessful",
        "rating_sum",
        "rating_count",
        "minutes",
    ]
    if entity_type == "student":
        counters += ["ib_calls", "ib_unresolved", "ib_high_priority", *[f"ib_{r}" for r in IB_REASONS]]
    totals: dict[date, dict[str, int]] = {}
    for row in model.objects.filter(**{key: entity_id}, hour__gte=start, hour__lte=now).values(
        "hour", *counters
    ):
        day = totals.setdefault(row["hour"].date(), dict.fromkeys(counters, 0))
        for c in counters:
            day[c] += row[c]
    series = []
    for i in range(days):
        d = first + timedelta(days=i)
        t = totals.get(d, dict.fromkeys(counters, 0))
        point: dict[str, Any] = {
            "date": d.isoformat(),
            "sessions_started": t["sessions_started"],
            "sessions_completed": t["sessions_completed"],
            "sessions_unsuccessful": t["sessions_unsuccessful"],
            "rated_sessions": t["rating_count"],
            "avg_rating": round(t["rating_sum"] / t["rating_count"], 2) if t["rating_count"] else None,
            "hours": round(t["minutes"] / 60, 2),
        }
        if entity_type == "student":
            point["ib_calls"] = t["ib_calls"]
            point["ib_unresolved"] = t["ib_unresolved"]
            point["ib_high_priority"] = t["ib_high_priority"]
        series.append(point)
    return series
