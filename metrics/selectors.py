"""Reads of snapshots for the API and the entity pages."""

from __future__ import annotations

from typing import Any

from django.db.models import Model

from metrics.models import StudentSnapshot, TutorSnapshot

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
        "-updated_at",
        "updated_at",
        "student_id",
    ),
    "tutor": (
        "avg_rating",
        "-avg_rating",
        "utilisation",
        "-utilisation",
        "sessions_7d",
        "-sessions_7d",
        "-updated_at",
        "updated_at",
        "tutor_id",
    ),
}


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
    return data


def entity_get(entity_type: str, entity_id: str) -> Model | None:
    model, key = ENTITY_MODELS[entity_type]
    return model.objects.filter(**{key: entity_id}).first()


def entity_list(entity_type: str, *, order: str, offset: int, limit: int) -> tuple[list[Model], bool]:
    model, key = ENTITY_MODELS[entity_type]
    field = order.lstrip("-")
    qs = (
        model.objects.exclude(**{f"{field}__isnull": True})
        if field not in (key, "updated_at")
        else model.objects.all()
    )
    rows = list(qs.order_by(order, key)[offset : offset + limit + 1])
    return rows[:limit], len(rows) > limit
