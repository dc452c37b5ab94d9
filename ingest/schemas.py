"""Event schemas: one pydantic model per event type, and the envelope rules of CONTRACT.md.

The same models validate requests, build the OpenAPI document and normalise the stored payload
(aliases resolved to canonical names, unknown fields kept).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from iops.lib.text import printable, unstorable_text
from metrics.vocabulary import IbReason, cell_key

# No control characters (PostgreSQL text and jsonb refuse NUL; none belongs in an id or a label).
Id = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")
]
Label = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$"),
]
Count = Annotated[int, Field(ge=0, le=1_000_000)]
Score = Annotated[float, Field(ge=0, le=100)]
Rating = Annotated[int, Field(ge=1, le=5)]

EVENT_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
# Bounds on unknown (kept) fields, at any depth: keys per object, items per array, string length.
MAX_EXTRA_FIELDS = 50
MAX_DEPTH = 5
MAX_EXTRA_STRING = 2000
MAX_EXTRA_ARRAY = 100
MAX_KEY_LENGTH = 64
MAX_ERRORS = 20
MAX_FUTURE_SECONDS = 300  # clock skew allowed on `timestamp`


class EventFields(BaseModel):
    # Unknown fields are kept (bounded in validate_event); strict: "5" is not an int, "true" not a bool;
    # 1e400 parses as infinity, which JSON cannot carry (it would be stored as null).
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)


class SessionStarted(EventFields):
    session_id: Id
    student_id: Id
    tutor_id: Id
    subject: Label | None = None
    session_type: Literal["one_on_one", "group", "instant_book"] | None = None
    scheduled_duration_minutes: Annotated[int, Field(ge=5, le=480)] | None = None


class SessionCompleted(EventFields):
    session_id: Id
    student_id: Id
    tutor_id: Id
    subject: Label | None = None
    actual_duration_minutes: Annotated[int, Field(ge=0, le=480)] | None = None
    student_rating: Rating | None = None
    tutor_rating: Rating | None = None
    completed_successfully: bool = True

    @classmethod
    def aliases(cls) -> dict[str, str]:
        return {"duration_minutes": "actual_duration_minutes", "rating": "student_rating"}


class IbCallLogged(EventFields):
    student_id: Id
    call_id: Id | None = None
    reason: IbReason | None = None
    duration_seconds: Annotated[int, Field(ge=0, le=86_400)] | None = None
    resolved: bool | None = None
    priority: Literal["low", "medium", "high"] | None = None


class TutorAvailabilityUpdated(EventFields):
    tutor_id: Id
    available_hours_this_week: Annotated[float, Field(ge=0, le=168)] | None = None
    subjects: Annotated[list[Label], Field(max_length=50)] | None = None
    timezone: Label | None = None
    accepts_instant_book: bool | None = None


class CustomerHealthUpdate(EventFields):
    student_id: Id
    health_score: Score | None = None
    churn_risk: Literal["low", "medium", "high"] | None = None
    sessions_last_7_days: Count | None = None
    sessions_last_30_days: Count | None = None
    ib_calls_last_14_days: Count | None = None
    avg_session_rating: Annotated[float, Field(ge=1, le=5)] | None = None


class SupplyDemandUpdate(EventFields):
    subject: Label
    region: Label
    available_tutors: Count | None = None
    active_students: Count | None = None
    demand_score: Score | None = None
    supply_score: Score | None = None
    balance_status: Literal["balanced", "high_demand", "oversupplied"] | None = None


EVENT_MODELS: dict[str, type[EventFields]] = {
    "session_started": SessionStarted,
    "session_completed": SessionCompleted,
    "ib_call_logged": IbCallLogged,
    "tutor_availability_updated": TutorAvailabilityUpdated,
    "customer_health_update": CustomerHealthUpdate,
    "supply_demand_update": SupplyDemandUpdate,
}
EVENT_TYPES = tuple(EVENT_MODELS)
# Documented aliases (the seed's flat example uses them): alias -> canonical name.
ALIASES: dict[str, dict[str, str]] = {"session_completed": SessionCompleted.aliases()}
ENVELOPE_KEYS = {"event_type", "event_id", "timestamp", "payload"}


class FieldError(Exception):
    """A list of {field, message} pairs for one event."""

    def __init__(self, errors: list[dict[str, str]]):
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))
        self.errors = errors


def _check_extra(value: Any, path: str, level: int, errors: list[dict[str, str]]) -> None:
    """Bound an unknown field's value: nesting depth, object and array sizes, strings, key names; and
    keep it storable: no NUL or lone surrogate in a string, no non-finite number (1e400)."""
    if len(errors) >= MAX_ERRORS:
        return
    if isinstance(value, str):
        if len(value) > MAX_EXTRA_STRING:
            errors.append({"field": path, "message": f"strings are limited to {MAX_EXTRA_STRING} characters"})
        elif (problem := unstorable_text(value)) is not None:
            errors.append({"field": path, "message": problem})
        return
    if isinstance(value, float) and not math.isfinite(value):
        errors.append({"field": path, "message": "must be a finite number"})
        return
    if not isinstance(value, dict | list):
        return
    if level >= MAX_DEPTH:
        errors.append({"field": path, "message": f"nesting deeper than {MAX_DEPTH} levels"})
        return
    if isinstance(value, list):
        if len(value) > MAX_EXTRA_ARRAY:
            errors.append({"field": path, "message": f"arrays are limited to {MAX_EXTRA_ARRAY} items"})
            return
        for i, item in enumerate(value):
            _check_extra(item, f"{path}[{i}]", level + 1, errors)
        return
    if len(value) > MAX_EXTRA_FIELDS:
        errors.append({"field": path, "message": f"objects are limited to {MAX_EXTRA_FIELDS} fields"})
        return
    for key, item in value.items():
        if len(key) > MAX_KEY_LENGTH or unstorable_text(key) is not None:
            errors.append(
                {
                    "field": f"{path}.{printable(key[:MAX_KEY_LENGTH])}",
                    "message": "field names are 1-64 characters of valid Unicode, no NUL",
                }
            )
            continue
        _check_extra(item, f"{path}.{key}", level + 1, errors)


def _loc(prefix: str, loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    return prefix + ".".join(parts) if parts else prefix.rstrip(".") or "body"


def _parse_timestamp(raw: Any, now: datetime) -> datetime:
    if not isinstance(raw, str) or len(raw) > 40:
        raise FieldError([{"field": "timestamp", "message": "must be an ISO 8601 string with a time zone"}])
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00") if raw.endswith("Z") else raw)
    except ValueError:
        raise FieldError([{"field": "timestamp", "message": "is not a valid ISO 8601 date-time"}]) from None
    if value.tzinfo is None or value.utcoffset() is None:
        raise FieldError([{"field": "timestamp", "message": "must include a time zone (e.g. Z or +00:00)"}])
    try:
        value = value.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59:59-23:59 or 0001-01-01T00:00:00+00:01: no UTC date exists
        raise FieldError([{"field": "timestamp", "message": "is out of range"}]) from None
    if value > now + timedelta(seconds=MAX_FUTURE_SECONDS):
        raise FieldError([{"field": "timestamp", "message": "is more than 5 minutes in the future"}])
    if value.year < 2000:
        raise FieldError([{"field": "timestamp", "message": "is before the year 2000"}])
    return value


def validate_event(raw: Any, *, now: datetime, new_id) -> dict[str, Any]:
    """Validate one event body; returns the normalised event or raises FieldError.

    Normalised shape: {event_id, event_type, timestamp (ISO, UTC), received_at, payload}.
    """
    if not isinstance(raw, dict):
        raise FieldError([{"field": "body", "message": "an event must be a JSON object"}])
    event_type = raw.get("event_type")
    if event_type is None:
        raise FieldError([{"field": "event_type", "message": "is required"}])
    if not isinstance(event_type, str) or event_type not in EVENT_MODELS:
        raise FieldError([{"field": "event_type", "message": f"must be one of {', '.join(EVENT_TYPES)}"}])
    errors: list[dict[str, str]] = []

    event_id = raw.get("event_id")
    if event_id is None:
        event_id = new_id()
    elif not isinstance(event_id, str) or not EVENT_ID_RE.match(event_id):
        errors.append({"field": "event_id", "message": "must be 1-64 characters of A-Z a-z 0-9 _ . : -"})

    timestamp = now
    if raw.get("timestamp") is not None:
        try:
            timestamp = _parse_timestamp(raw["timestamp"], now)
        except FieldError as exc:
            errors.extend(exc.errors)

    if "payload" in raw and raw["payload"] is not None:
        if not isinstance(raw["payload"], dict):
            raise FieldError(errors + [{"field": "payload", "message": "must be a JSON object"}])
        fields = dict(raw["payload"])
        prefix = "payload."
    else:
        fields = {k: v for k, v in raw.items() if k not in ENVELOPE_KEYS}
        prefix = ""

    model = EVENT_MODELS[event_type]
    for alias, canonical in ALIASES.get(event_type, {}).items():
        if alias in fields:
            if canonical in fields and fields[canonical] != fields[alias]:
                errors.append({"field": prefix + alias, "message": f"conflicts with {canonical}"})
            fields.setdefault(canonical, fields.pop(alias))
            fields.pop(alias, None)
    known = set(model.model_fields)
    extras = [k for k in fields if k not in known]
    if len(extras) > MAX_EXTRA_FIELDS:
        errors.append(
            {"field": prefix.rstrip(".") or "body", "message": f"more than {MAX_EXTRA_FIELDS} unknown fields"}
        )
    else:
        for key in extras:
            if not key or len(key) > MAX_KEY_LENGTH or unstorable_text(key) is not None:
                name = prefix + printable(key[:MAX_KEY_LENGTH]) if key else prefix.rstrip(".") or "body"
                errors.append(
                    {"field": name, "message": "field names are 1-64 characters of valid Unicode, no NUL"}
                )
            else:
                _check_extra(fields[key], prefix + key, 1, errors)
    try:
        parsed = model.model_validate(fields)
    except ValidationError as exc:
        for err in exc.errors(include_url=False, include_context=False, include_input=False):
            errors.append({"field": _loc(prefix, err["loc"]), "message": err["msg"]})
        parsed = None
    if errors or parsed is None:
        raise FieldError(errors[:MAX_ERRORS])
    payload = parsed.model_dump(mode="json", exclude_none=True)
    return {
        "event_id": event_id,
        "event_type": event_type,
        "timestamp": timestamp.isoformat(),
        "received_at": now.isoformat(),
        "payload": payload,
    }


def partition_key(event: dict[str, Any]) -> str:
    """The entity an event belongs to: keeps one entity's events on one shard, in order."""
    payload = event["payload"]
    for key in ("student_id", "tutor_id"):
        if payload.get(key):
            return str(payload[key])
    if payload.get("subject"):
        return cell_key(payload["subject"], payload.get("region", ""))
    return event["event_id"]
