"""Read API for entities: students, tutors, subject × region rows, with OpenAPI-documented shapes.

Lists are `{"results": [...], "next": cursor-or-null}` with an opaque keyset cursor (the ordered value
and the row id of the last row: stable while rows change, unlike an offset). A subject × region row
is addressed as "Subject|region", url-quoted: /api/entities/subject_region/Computer%20Science%7Cwest.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from django.http import Http404
from django.utils import timezone
from ninja import Field, Query, Router, Schema
from ninja.orm import create_schema

from iops.lib.http import FieldHttpError
from metrics.models import StudentSnapshot, SubjectRegionSnapshot, TutorSnapshot
from metrics.selectors import (
    HISTORY_MAX_DAYS,
    BadCursor,
    entity_get,
    entity_history,
    entity_list,
    snapshot_as_dict,
    subject_region_as_dict,
    subject_region_get,
)
from metrics.vocabulary import StudentOrder, SubjectRegionOrder, TutorOrder

router = Router(tags=["entities"])


class Error(Schema):
    error: str
    errors: list[dict[str, str]]


class StudentOut(create_schema(StudentSnapshot, name="StudentFields", exclude=["id", "student_id"])):  # type: ignore[misc]  # ninja builds the base at import
    entity_type: Literal["student"]
    entity_id: str


class TutorOut(create_schema(TutorSnapshot, name="TutorFields", exclude=["id", "tutor_id"])):  # type: ignore[misc]  # ninja builds the base at import
    entity_type: Literal["tutor"]
    entity_id: str
    subjects: list[str] = Field(default_factory=list, description="from the latest availability report")
    burnout_level: Literal["", "low", "medium", "high"] = Field(
        description="low < 0.3 ≤ medium < 0.6 ≤ high; empty when there is nothing to judge"
    )


class SubjectRegionOut(create_schema(SubjectRegionSnapshot, name="SubjectRegionFields", exclude=["id"])):  # type: ignore[misc]  # ninja builds the base at import
    entity_type: Literal["subject_region"]
    entity_id: str = Field(description='"Subject|region", url-quote it in a path')


class StudentPage(Schema):
    results: list[StudentOut]
    next: str | None


class TutorPage(Schema):
    results: list[TutorOut]
    next: str | None


class SubjectRegionPage(Schema):
    results: list[SubjectRegionOut]
    next: str | None


class DayPoint(Schema):
    date: date
    sessions_started: int
    sessions_completed: int
    sessions_unsuccessful: int
    rated_sessions: int
    avg_rating: float | None = Field(description="mean rating of the day's rated sessions")
    hours: float
    ib_calls: int | None = None
    ib_unresolved: int | None = None
    ib_high_priority: int | None = None


class History(Schema):
    entity_type: Literal["student", "tutor"]
    entity_id: str
    days: int
    as_of: datetime
    series: list[DayPoint]


def _contains(description: str) -> Any:
    """A list's `q`: 1 to 100 characters to look for, any case."""
    return Field(None, min_length=1, max_length=100, description=description)


class StudentFilters(Schema):
    order: StudentOrder = "health_score"
    limit: int = Field(50, ge=1, le=500)
    cursor: str | None = None
    health_below: float | None = Field(None, description="our health score below this")
    trend: Literal["rising", "steady", "falling", "new"] | None = Field(None, description="velocity trend")
    churn_risk: Literal["low", "medium", "high"] | None = Field(None, description="the platform's label")
    q: str | None = _contains('the student id contains this, case-insensitive ("stu_12")')


class TutorFilters(Schema):
    order: TutorOrder = "avg_rating"
    limit: int = Field(50, ge=1, le=500)
    cursor: str | None = None
    burnout_above: float | None = Field(None, ge=0, le=1)
    utilisation_above: float | None = Field(None, ge=0)
    region: str | None = Field(None, description="e.g. west (from the tutor's timezone)")
    q: str | None = _contains('the tutor id contains this, case-insensitive ("stu_12")')


class SubjectRegionFilters(Schema):
    order: SubjectRegionOrder = "-own_ratio"
    limit: int = Field(50, ge=1, le=500)
    cursor: str | None = None
    status: Literal["balanced", "high_demand", "oversupplied"] | None = None
    subject: str | None = None
    region: str | None = None
    q: str | None = _contains("subject or region contains this, case-insensitive")


def _page(entity_type: str, query: Schema) -> tuple[list[Any], str | None]:
    filters = query.dict()
    paging = {"order": filters.pop("order"), "limit": filters.pop("limit"), "cursor": filters.pop("cursor")}
    try:
        return entity_list(entity_type=entity_type, **paging, filters=filters)
    except BadCursor:
        raise FieldHttpError(
            400, "invalid cursor", [{"field": "cursor", "message": "not a cursor this list gave out"}]
        ) from None


# Literal paths first: "subject_region" must not be taken for a student or tutor id.
@router.get(
    "/subject_region",
    response={200: SubjectRegionPage, 400: Error},
    summary="List subject × region rows (highest own demand/supply ratio first)",
)
def list_subject_regions(request, filters: Query[SubjectRegionFilters]):
    rows, nxt = _page("subject_region", filters)
    return {"results": [subject_region_as_dict(r) for r in rows], "next": nxt}


@router.get(
    "/subject_region/{entity_id}",
    response={200: SubjectRegionOut, 404: Error},
    summary='One subject × region row; id "Subject|region", url-quoted',
)
def get_subject_region(request, entity_id: str):
    obj = subject_region_get(entity_id)
    if obj is None:
        raise Http404(f"no subject × region {entity_id}")
    return subject_region_as_dict(obj)


@router.get(
    "/student", response={200: StudentPage, 400: Error}, summary="List students (lowest health first)"
)
def list_students(request, filters: Query[StudentFilters]):
    rows, nxt = _page("student", filters)
    return {"results": [snapshot_as_dict("student", r) for r in rows], "next": nxt}


@router.get("/tutor", response={200: TutorPage, 400: Error}, summary="List tutors")
def list_tutors(request, filters: Query[TutorFilters]):
    rows, nxt = _page("tutor", filters)
    return {"results": [snapshot_as_dict("tutor", r) for r in rows], "next": nxt}


@router.get("/student/{entity_id}", response={200: StudentOut, 404: Error}, summary="One student's snapshot")
def get_student(request, entity_id: str):
    return _snapshot("student", entity_id)


@router.get("/tutor/{entity_id}", response={200: TutorOut, 404: Error}, summary="One tutor's snapshot")
def get_tutor(request, entity_id: str):
    return _snapshot("tutor", entity_id)


@router.get(
    "/{entity_type}/{entity_id}/history",
    response={200: History, 400: Error, 404: Error},
    summary="A student's or tutor's daily series from the hourly buckets (UTC days, today included)",
)
def get_history(
    request,
    entity_type: Literal["student", "tutor"],
    entity_id: str,
    days: int = Query(30, ge=1, le=HISTORY_MAX_DAYS),
):
    if entity_get(entity_type, entity_id) is None:
        raise Http404(f"no {entity_type} {entity_id}")
    now = timezone.now()
    series = entity_history(entity_type=entity_type, entity_id=entity_id, days=days, now=now)
    return {"entity_type": entity_type, "entity_id": entity_id, "days": days, "as_of": now, "series": series}


def _snapshot(entity_type: str, entity_id: str) -> dict[str, Any]:
    obj = entity_get(entity_type, entity_id)
    if obj is None:
        raise Http404(f"no {entity_type} {entity_id}")
    return snapshot_as_dict(entity_type, obj)
