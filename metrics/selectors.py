"""Reads of snapshots for the API and the entity pages: lists with keyset pagination, one entity,
its daily history from the hourly buckets, its sessions, subject × region rows and their daily
readings, the search. The dashboard's KPI and chart queries are in metrics/kpis.py."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Avg, F, Field, Model, Q, QuerySet
from django.db.models.functions import TruncDay

from iops.lib.text import unstorable_text
from metrics.burnout import burnout_level
from metrics.models import (
    Session,
    StudentHourly,
    StudentSnapshot,
    SubjectRegionSnapshot,
    SupplyDemandReading,
    TutorHourly,
    TutorSnapshot,
)
from metrics.vocabulary import IB_VALUES, SESSION_VALUES, cell_key, cell_parse

ENTITY_MODELS: dict[str, tuple[type[Model], str]] = {
    "student": (StudentSnapshot, "student_id"),
    "tutor": (TutorSnapshot, "tutor_id"),
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
    if isinstance(obj, TutorSnapshot):
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
    return model._default_manager.filter(**{key: entity_id}).first()


def subject_region_get(entity_id: str) -> SubjectRegionSnapshot | None:
    cell = cell_parse(entity_id)
    if cell is None:
        return None
    return subject_region_at(subject=cell[0], region=cell[1])


def subject_region_at(*, subject: str, region: str) -> SubjectRegionSnapshot | None:
    return SubjectRegionSnapshot.objects.filter(subject=subject, region=region).first()


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
        if not isinstance(model_field, Field):
            raise TypeError  # a relation is no sortable column
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


# entity type → its snapshot table and its list's filters: {filter name: lookup}
LIST_FILTERS: dict[str, tuple[type[Model], dict[str, str]]] = {
    "student": (
        StudentSnapshot,
        {"health_below": "health_score__lt", "trend": "velocity_trend", "churn_risk": "platform_churn_risk"},
    ),
    "tutor": (
        TutorSnapshot,
        {
            "burnout_above": "burnout_risk__gt",
            "utilisation_above": "utilisation__gt",
            "region": "region__contains",
        },
    ),
    "subject_region": (
        SubjectRegionSnapshot,
        {"status": "balance_status", "subject": "subject", "region": "region"},
    ),
}


# entity type → the rows a list's `q` (any case) keeps
LIST_SEARCH: dict[str, Callable[[str], Q]] = {
    "student": lambda q: Q(student_id__icontains=q),
    "tutor": lambda q: Q(tutor_id__icontains=q),
    "subject_region": lambda q: Q(subject__icontains=q) | Q(region__icontains=q),
}


def entities_filtered(*, entity_type: str, filters: dict[str, Any]) -> QuerySet:
    """The rows a list's filters keep: every filter given a value (LIST_FILTERS names them; None and
    "" mean "any") and `q`, contained in the id (or the subject or region), any case."""
    model, lookups = LIST_FILTERS[entity_type]
    q = filters.get("q")
    wanted = {lookups[name]: v for name, v in filters.items() if name != "q" and v is not None and v != ""}
    qs = model._default_manager.filter(**wanted)
    return qs.filter(LIST_SEARCH[entity_type](q)) if q else qs


def students_filtered(**filters: Any) -> QuerySet[StudentSnapshot]:
    """The students the list's filters keep (the list pages them, the CSV export streams them)."""
    return entities_filtered(entity_type="student", filters=filters)


def tutors_filtered(**filters: Any) -> QuerySet[TutorSnapshot]:
    """The tutors the list's filters keep (the list pages them, the CSV export streams them)."""
    return entities_filtered(entity_type="tutor", filters=filters)


def entity_list(
    *, entity_type: str, order: str, limit: int, cursor: str | None = None, filters: dict[str, Any]
) -> tuple[list[Model], str | None]:
    """One page of students, tutors or subject × region rows (keyset_page) matching the filters
    (entities_filtered)."""
    qs = entities_filtered(entity_type=entity_type, filters=filters)
    return keyset_page(qs, order=order, cursor=cursor, limit=limit)


def entity_history(*, entity_type: str, entity_id: str, days: int, now: datetime) -> list[dict[str, Any]]:
    """Daily series (UTC days, oldest first, today included, empty days as zeros) from hourly buckets."""
    model, key = (StudentHourly, "student_id") if entity_type == "student" else (TutorHourly, "tutor_id")
    first = now.date() - timedelta(days=days - 1)
    start = datetime.combine(first, datetime.min.time(), tzinfo=now.tzinfo)
    counters = SESSION_VALUES + IB_VALUES if entity_type == "student" else list(SESSION_VALUES)
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


def entity_sessions(*, entity_type: str, entity_id: str, limit: int = 15) -> list[Session]:
    """A student's or tutor's latest sessions, most recently started first."""
    key = ENTITY_MODELS[entity_type][1]
    return list(Session.objects.filter(**{key: entity_id}).order_by("-started_at", "-id")[:limit])


def supply_demand_daily(*, subject: str, region: str, days: list[datetime]) -> dict[str, list[float]]:
    """A cell's mean platform demand and supply scores per UTC day (`days`: the midnights, oldest
    first); a day with no reading is 0."""
    readings = SupplyDemandReading.objects.filter(subject=subject, region=region, reported_at__gte=days[0])
    rows = {
        r["day"]: r
        for r in readings.annotate(day=TruncDay("reported_at", tzinfo=UTC))
        .values("day")
        .annotate(demand=Avg("demand_score"), supply=Avg("supply_score"))
        .values("day", "demand", "supply")
    }
    return {
        k: [rows[d][k] if d in rows and rows[d][k] is not None else 0 for d in days]
        for k in ("demand", "supply")
    }


def entity_search(*, query: str, limit: int = 20) -> list[tuple[str, str]]:
    """(entity_type, entity_id) matches: an exact id alone; otherwise ids containing the text and
    subject × region cells whose subject or region contains it, case-insensitive ("math" finds the
    Mathematics cells, "stu_12" stu_12, stu_120, …). Each kind is capped at `limit` rows, in id order."""
    q = query.strip()
    if not q:
        return []
    exact = [
        (entity_type, i)
        for entity_type, (model, key) in ENTITY_MODELS.items()
        for i in model._default_manager.filter(**{key: q}).values_list(key, flat=True)[:1]
    ]
    if exact:
        return exact
    found = [
        (entity_type, i)
        for entity_type, (model, key) in ENTITY_MODELS.items()
        for i in model._default_manager.filter(**{f"{key}__icontains": q})
        .order_by(key)
        .values_list(key, flat=True)[:limit]
    ]
    subject, region = cell_parse(q) or (q, "")
    places = SubjectRegionSnapshot.objects.filter(Q(subject__icontains=q) | Q(region__icontains=q))
    if region:
        places = SubjectRegionSnapshot.objects.filter(subject__icontains=subject, region__icontains=region)
    cells = places.order_by("subject", "region").values_list("subject", "region")[:limit]
    found += [("subject_region", cell_key(s, r)) for s, r in cells]
    return found[: limit * 2]
