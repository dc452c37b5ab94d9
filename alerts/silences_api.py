"""/api/silences (issue 19): list, create and expire silences. A silence mutes the notifications of the
alerts it matches; they are still raised and shown (muted) on the dashboard."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from django.shortcuts import get_object_or_404
from django.utils import timezone
from ninja import Field, Router, Schema, Status
from pydantic import field_validator

from alerts.api import key_label
from alerts.models import Silence
from alerts.silences import (
    SilenceInvalid,
    silence_alert_ids,
    silence_as_dict,
    silence_create,
    silence_expire,
    silence_list,
)
from iops.lib.http import FieldHttpError
from iops.lib.realtime import Change, publish_change

router = Router(tags=["silences"])


class SilenceIn(Schema):
    alert_type: str | None = Field(None, description="an alert type, e.g. low_health_score")
    entity_type: str | None = Field(
        None, description="student, tutor, subject_region or global (with entity_id)"
    )
    entity_id: str | None = Field(None, description="the entity's id (with entity_type)")
    cell: str | None = Field(None, description='a subject × region cell, e.g. "Mathematics|west"')
    starts_at: datetime | None = Field(None, description="ISO 8601 with zone; now when absent")
    ends_at: datetime | None = Field(None, description="ISO 8601 with zone; or give duration_minutes")
    duration_minutes: int | None = Field(
        None, ge=1, le=90 * 24 * 60, description="instead of ends_at: from starts_at"
    )
    reason: str = Field(description="why; up to 500 characters")

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _zoned(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("needs a time zone, e.g. 2026-03-02T09:00:00Z")
        return value


def _publish(silence: Silence) -> None:
    ids = silence_alert_ids(silence)
    if ids:
        publish_change(Change(alerts_updated=ids))


@router.get("", summary="Silences, latest ending first")
def list_silences(request, state: Literal["active", "expired", "pending", "all"] = "all", limit: int = 200):
    now = timezone.now()
    rows = silence_list(state=None if state == "all" else state, now=now, limit=max(1, min(limit, 500)))
    return {"results": [silence_as_dict(s, now=now) for s in rows]}


@router.post("", response={201: dict}, summary="Create a silence (at least one matcher)")
def create_silence(request, body: SilenceIn):
    now = timezone.now()
    if (body.ends_at is None) == (body.duration_minutes is None):
        raise FieldHttpError(
            400,
            "invalid silence",
            [{"field": "ends_at", "message": "give exactly one of ends_at and duration_minutes"}],
        )
    starts_at = body.starts_at or now
    ends_at = body.ends_at or starts_at + timedelta(minutes=body.duration_minutes or 0)
    user = request.auth if getattr(request.auth, "is_staff", False) else None
    try:
        silence = silence_create(
            alert_type=body.alert_type or "",
            entity_type=body.entity_type or "",
            entity_id=body.entity_id or "",
            cell=body.cell or "",
            starts_at=starts_at,
            ends_at=ends_at,
            reason=body.reason,
            user=user,
            api_key=key_label(request.auth),
            now=now,
        )
    except SilenceInvalid as exc:
        errors = [{"field": field, "message": message} for field, message in exc.errors]
        raise FieldHttpError(400, "invalid silence", errors) from None
    _publish(silence)
    return Status(201, silence_as_dict(silence, now=now))


@router.post("/{silence_id}/expire", summary="End a silence now (no-op when it has ended)")
def expire_silence(request, silence_id: int):
    now = timezone.now()
    silence = silence_expire(silence=get_object_or_404(Silence, pk=silence_id), now=now)
    _publish(silence)
    return silence_as_dict(silence, now=now)
