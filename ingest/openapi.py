"""POST /api/ingest in the OpenAPI document, generated from the models in ingest/schemas.py.

The ingest endpoint is a plain fast view (and a lean ASGI route), not a django-ninja operation, so
iops/api.py adds this path to ninja's generated document. Every field list comes from pydantic:
the six event models, the envelope constants the validator uses, and the response models below.
"""

from __future__ import annotations

from typing import Any, Literal

from django.conf import settings
from pydantic import BaseModel, ConfigDict, Field

from ingest.schemas import (
    ALIASES,
    EVENT_ID_RE,
    EVENT_MODELS,
    MAX_DEPTH,
    MAX_EXTRA_ARRAY,
    MAX_EXTRA_FIELDS,
    MAX_EXTRA_STRING,
    MAX_FUTURE_SECONDS,
)

REF = "#/components/schemas/{model}"


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")  # exact shapes: the oneOf alternatives cannot overlap


class FieldErrorOut(Out):
    field: str = Field(
        description="the field, e.g. `student_rating`, `payload.student_id`, `events[3].reason`"
    )
    message: str


class ErrorOut(Out):
    """The one error shape of the API."""

    error: str
    errors: list[FieldErrorOut]


class AcceptedOut(Out):
    """One event accepted."""

    accepted: Literal[1]
    event_ids: list[str] = Field(min_length=1, max_length=1)


class ItemAccepted(Out):
    index: int
    status: Literal["accepted"]
    event_id: str


class ItemRejected(Out):
    index: int
    status: Literal["rejected"]
    errors: list[FieldErrorOut] = Field(
        description="`stream` when the stream refused a valid event (send it again)"
    )


class BatchOut(Out):
    """A batch: one result per item, in order. `error`/`errors` are present when nothing was accepted."""

    accepted: int
    rejected: int
    event_ids: list[str]
    results: list[ItemAccepted | ItemRejected]
    error: str | None = None
    errors: list[FieldErrorOut] | None = None


RESPONSE_MODELS = (FieldErrorOut, ErrorOut, AcceptedOut, ItemAccepted, ItemRejected, BatchOut)


def _component(schemas: dict[str, Any], model: type[BaseModel]) -> dict[str, str]:
    schema = model.model_json_schema(ref_template=REF)
    for name, definition in schema.pop("$defs", {}).items():
        schemas.setdefault(name, definition)
    schemas[model.__name__] = schema
    return {"$ref": REF.format(model=model.__name__)}


def _envelope(event_type: str) -> dict[str, Any]:
    return {
        "event_type": {"const": event_type},
        "event_id": {
            "type": ["string", "null"],
            "pattern": EVENT_ID_RE.pattern,
            "description": "idempotency key; generated when absent (or null). Sending it again has no further "
            "effect.",
        },
        "timestamp": {
            "type": ["string", "null"],
            "format": "date-time",
            "description": "ISO 8601 with a time zone, when it happened; the receive time when absent (or "
            f"null); at most {MAX_FUTURE_SECONDS} s in the future",
        },
    }


def _event_schemas(schemas: dict[str, Any]) -> dict[str, str]:
    refs = []
    for event_type, model in EVENT_MODELS.items():
        fields_ref = _component(schemas, model)
        fields = schemas[model.__name__]
        aliases = ALIASES.get(event_type, {})
        for alias, canonical in aliases.items():  # documented aliases, same constraints as the field
            fields["properties"][alias] = {
                **fields["properties"][canonical],
                "title": alias,
                "description": f"alias of `{canonical}` (the seed's flat example uses it)",
            }
        flat = {
            "title": f"{event_type} (flat)",
            "allOf": [
                {"type": "object", "required": ["event_type"], "properties": _envelope(event_type)},
                fields_ref,
            ],
        }
        envelope = {
            "title": f"{event_type} (payload)",
            "type": "object",
            "required": ["event_type", "payload"],
            "properties": {**_envelope(event_type), "payload": fields_ref},
        }
        name = f"{model.__name__}Event"
        schemas[name] = {
            "description": f"`{event_type}`: its fields flat beside `event_type`, or inside `payload`. "
            f"Unknown extra fields are kept (bounded: {MAX_EXTRA_FIELDS} per object, depth {MAX_DEPTH}, "
            f"arrays of {MAX_EXTRA_ARRAY}, strings of {MAX_EXTRA_STRING}).",
            "anyOf": [flat, envelope],
        }
        refs.append({"$ref": REF.format(model=name)})
    schemas["Event"] = {"description": "One event of the six types.", "oneOf": refs}
    schemas["Batch"] = {
        "type": "object",
        "required": ["events"],
        "properties": {
            "events": {
                "type": "array",
                "minItems": 1,
                "maxItems": settings.INGEST_MAX_BATCH,
                "items": {"$ref": REF.format(model="Event")},
                "description": "validated item by item: a bad item is rejected in `results`, the rest go on",
            }
        },
    }
    return {"$ref": REF.format(model="Event")}


def _response(description: str, ref: dict[str, Any], **headers: str) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": ref}}}
    if headers:
        out["headers"] = {
            name: {"description": text, "schema": {"type": "string"}} for name, text in headers.items()
        }
    return out


def add_ingest_path(document: dict[str, Any], *, prefix: str = "/api/") -> dict[str, Any]:
    """Add POST {prefix}ingest and its components to a generated OpenAPI document (in place)."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    event = _event_schemas(schemas)
    out = {model.__name__: _component(schemas, model) for model in RESPONSE_MODELS}
    error, batch = out["ErrorOut"], out["BatchOut"]
    max_kib = settings.INGEST_MAX_BODY_BYTES // 1024
    document.setdefault("paths", {})[f"{prefix}ingest"] = {
        "post": {
            "operationId": "ingest_events",
            "summary": "Ingest one event or a batch of 1–500",
            "description": "Validates each event against its type's schema, publishes the accepted ones to "
            "the event stream and answers at once; processing happens behind the stream. "
            f"Bodies over {max_kib} KiB get 413. Rate limit per key, counted in events.",
            "tags": ["ingest"],
            "security": [{"BearerKey": []}, {"HeaderKey": []}],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"oneOf": [event, {"$ref": REF.format(model="Batch")}]},
                    }
                },
            },
            "responses": {
                "202": _response(
                    "accepted (a batch: at least one item)", {"oneOf": [out["AcceptedOut"], batch]}
                ),
                "400": _response(
                    "invalid JSON, invalid event, or a batch with nothing valid", {"oneOf": [error, batch]}
                ),
                "401": _response(
                    "missing or unknown API key", error, **{"WWW-Authenticate": 'Bearer realm="iops"'}
                ),
                "403": _response("the API key lacks the ingest scope", error),
                "405": _response("only POST", error, Allow="POST"),
                "413": _response(f"body over {max_kib} KiB", error),
                "415": _response("Content-Type is not application/json", error),
                "429": _response("rate limit of this key exceeded", error, **{"Retry-After": "seconds"}),
                "503": _response(
                    "the stream is unavailable, or refused every valid event of the batch",
                    {"oneOf": [error, batch]},
                    **{"Retry-After": "seconds"},
                ),
            },
        }
    }
    return document
