"""CSV exports (issue 19): the alert list, the student and tutor lists and an entity's daily history,
with the same filters as the lists, under /api/export/ (API key with `read`, or the staff session the
dashboard's "Export CSV" links carry).

Streamed, never built in memory: rows are read in keyset pages of EXPORT_PAGE_ROWS along a unique,
indexed key, and each page is written out before the next is read. Under ASGI (daphne, uvicorn) the
body is an async generator reading each page through sync_to_async — Django would otherwise drain a
sync iterator into a list before sending a byte; under WSGI and the test client it is a sync one."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import date, datetime
from typing import Any, Literal

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, StreamingHttpResponse
from django.utils import timezone
from ninja import Field, Query, Router, Schema

from alerts.models import ACTIVE_STATUSES, EntityType, Severity, Status
from alerts.selectors import alert_as_dict, alerts_filtered
from metrics.models import StudentSnapshot, TutorSnapshot
from metrics.selectors import (
    HISTORY_MAX_DAYS,
    entity_get,
    entity_history,
    snapshot_as_dict,
    students_filtered,
    tutors_filtered,
)

router = Router(tags=["export"])

EXPORT_PAGE_ROWS = 1000
ALERT_COLUMNS = (
    "id",
    "type",
    "severity",
    "status",
    "entity_type",
    "entity_id",
    "message",
    "occurrences",
    "first_seen",
    "last_seen",
    "acknowledged_at",
    "acknowledged_by",
    "acknowledged_by_key",
    "closed_at",
    "closed_by",
    "closed_by_key",
    "dismiss_reason",
    "details",
)
# A page of rows as lists, and where the next page starts (None: this was the last).
Fetch = Callable[[Any], tuple[list[list[Any]], Any]]
CSV_RESPONSE = {
    "responses": {
        200: {
            "description": "CSV, header row first, streamed",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    }
}


class _Echo:
    def write(self, value: str) -> str:
        return value


def cell(value: Any) -> Any:
    """One CSV cell: nothing for null, JSON for structures, ISO 8601 for times; text a spreadsheet would
    run as a formula (=, +, -, @ first — ids and messages come from events) gets a leading quote."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        value = json.dumps(value, sort_keys=True)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def keyset_fetch(qs: QuerySet, *, key: str, descending: bool, to_row: Callable[[Any], list[Any]]) -> Fetch:
    """Pages of `qs` along the unique `key`: each page one query with a LIMIT, none held open."""

    def fetch(after: Any) -> tuple[list[list[Any]], Any]:
        page = qs
        if after is not None:
            page = page.filter(**{f"{key}__{'lt' if descending else 'gt'}": after})
        rows = list(page.order_by(f"-{key}" if descending else key)[:EXPORT_PAGE_ROWS])
        more = len(rows) == EXPORT_PAGE_ROWS
        return [to_row(r) for r in rows], (getattr(rows[-1], key) if more else None)

    return fetch


def _lines(header: list[str], fetch: Fetch) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(header)
    rows, after = fetch(None)
    while True:
        yield "".join(writer.writerow([cell(v) for v in row]) for row in rows)
        if after is None:
            return
        rows, after = fetch(after)


async def _alines(header: list[str], fetch: Fetch) -> AsyncIterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(header)
    rows, after = await sync_to_async(fetch)(None)
    while True:
        yield "".join(writer.writerow([cell(v) for v in row]) for row in rows)
        if after is None:
            return
        rows, after = await sync_to_async(fetch)(after)


def csv_response(
    request: HttpRequest, *, name: str, header: list[str], fetch: Fetch
) -> StreamingHttpResponse:
    body = _alines(header, fetch) if isinstance(request, ASGIRequest) else _lines(header, fetch)
    response = StreamingHttpResponse(body, content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%dT%H%MZ")
    response["Content-Disposition"] = f'attachment; filename="iops-{name}-{stamp}.csv"'
    response["Cache-Control"] = "no-store"
    return response


class AlertExportFilters(Schema):
    status: Literal["open", "acknowledged", "resolved", "dismissed", "active"] | None = Field(
        None, description="one status, or active (open and acknowledged), as the dashboard's filter"
    )
    severity: Severity | None = None
    type: str | None = Field(None, max_length=40)
    entity_type: EntityType | None = None
    entity_id: str | None = Field(None, max_length=200)
    q: str | None = Field(None, min_length=1, max_length=100, description="entity id or message contains it")


@router.get("/alerts.csv", openapi_extra=CSV_RESPONSE, summary="The alert list as CSV (newest first)")
def export_alerts(request, filters: Query[AlertExportFilters]):
    status = filters.status
    exact = {"severity": filters.severity, "type": filters.type, "entity_type": filters.entity_type}
    exact["entity_id"] = filters.entity_id
    statuses = tuple(ACTIVE_STATUSES) if status == "active" else (Status(status),) if status else None
    qs = alerts_filtered(filters=exact, q=filters.q, statuses=statuses)

    def to_row(alert) -> list[Any]:
        data = alert_as_dict(alert)
        return [data[c] for c in ALERT_COLUMNS]

    fetch = keyset_fetch(qs, key="id", descending=True, to_row=to_row)
    return csv_response(request, name="alerts", header=list(ALERT_COLUMNS), fetch=fetch)


def _snapshot_export(request, entity_type: str, qs: QuerySet, extra: tuple[str, ...] = ()):
    model = qs.model
    key = f"{entity_type}_id"
    fields = [f.name for f in model._meta.concrete_fields if f.name not in ("id", key)]
    header = [key, *fields, *extra]

    def to_row(obj) -> list[Any]:
        data = snapshot_as_dict(entity_type, obj)
        return [data["entity_id"], *(data[f] for f in fields), *(data[f] for f in extra)]

    fetch = keyset_fetch(qs, key=key, descending=False, to_row=to_row)
    return csv_response(request, name=f"{entity_type}s", header=header, fetch=fetch)


class StudentExportFilters(Schema):
    health_below: float | None = Field(None, description="our health score below this")
    trend: Literal["rising", "steady", "falling", "new"] | None = None
    churn_risk: Literal["low", "medium", "high"] | None = None
    q: str | None = Field(None, min_length=1, max_length=100, description="the student id contains it")


class TutorExportFilters(Schema):
    burnout_above: float | None = Field(None, ge=0, le=1)
    utilisation_above: float | None = Field(None, ge=0)
    region: str | None = Field(None, max_length=100)
    q: str | None = Field(None, min_length=1, max_length=100, description="the tutor id contains it")


@router.get("/students.csv", openapi_extra=CSV_RESPONSE, summary="The student list as CSV (by id)")
def export_students(request, filters: Query[StudentExportFilters]):
    qs: QuerySet[StudentSnapshot] = students_filtered(**filters.dict())
    return _snapshot_export(request, "student", qs)


@router.get("/tutors.csv", openapi_extra=CSV_RESPONSE, summary="The tutor list as CSV (by id)")
def export_tutors(request, filters: Query[TutorExportFilters]):
    qs: QuerySet[TutorSnapshot] = tutors_filtered(**filters.dict())
    return _snapshot_export(request, "tutor", qs, extra=("avg_rating", "burnout_level"))


HISTORY_RESPONSES = {
    "responses": {
        **CSV_RESPONSE["responses"],
        404: {
            "description": "no such student or tutor",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ApiError"}}},
        },
    }
}


@router.get(
    "/history.csv",
    openapi_extra=HISTORY_RESPONSES,
    summary="A student's or tutor's daily history as CSV (UTC days, oldest first)",
)
def export_history(
    request,
    entity_type: Literal["student", "tutor"],
    entity_id: str = Query(..., max_length=200),
    days: int = Query(30, ge=1, le=HISTORY_MAX_DAYS),
):
    if entity_get(entity_type, entity_id) is None:
        raise Http404(f"no {entity_type} {entity_id}")
    series = entity_history(entity_type=entity_type, entity_id=entity_id, days=days, now=timezone.now())
    header = list(series[0]) if series else ["date"]

    def fetch(after: Any) -> tuple[list[list[Any]], Any]:
        return [[day[c] for c in header] for day in series], None

    name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{entity_type}-{entity_id}")[:60] + "-history"
    return csv_response(request, name=name, header=header, fetch=fetch)
