"""Reads of insights: the API list, the model-call counts for /metrics, the beat's riskiest set."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Q, QuerySet

from alerts.thresholds import health_cuts
from insights.models import Insight

BEDROCK_PREFIX = "bedrock:"
# fallback_reason prefix of a Bedrock call that was made and failed (it still spent its budget slot).
BEDROCK_FAILED_PREFIX = "bedrock error"


def insight_list(
    *,
    entity_type: str | None = None,
    entity_id: str | None = None,
    alert_id: int | None = None,
    limit: int = 50,
) -> list[Insight]:
    qs: QuerySet[Insight] = Insight.objects.all()
    if entity_type:
        qs = qs.filter(entity_type=entity_type)
    if entity_id:
        qs = qs.filter(entity_id=entity_id)
    if alert_id is not None:
        qs = qs.filter(alert_id=alert_id)
    return list(qs.order_by("-scored_at", "-pk")[:limit])


def insight_labels(insights: list[Insight]) -> dict[int, tuple[str, str]]:
    """The operator's label of each insight's alert (alerts.AlertLabel): {alert_id: (label, reason)}."""
    from alerts.models import AlertLabel

    ids = {i.alert_id for i in insights if i.alert_id is not None}
    rows = AlertLabel.objects.filter(alert_id__in=ids).values_list("alert_id", "label", "reason")
    return {a: (label, reason) for a, label, reason in rows}


def insight_as_dict(insight: Insight, labels: dict[int, tuple[str, str]] | None = None) -> dict[str, Any]:
    found = (labels or {}).get(insight.alert_id) if insight.alert_id is not None else None
    label, reason = found if found is not None else (None, None)
    return {
        "label": label,
        "label_reason": reason or None,
        "id": insight.pk,
        "entity_type": insight.entity_type,
        "entity_id": insight.entity_id,
        "alert_id": insight.alert_id,
        "risk": insight.risk,
        "level": insight.level,
        "explanation": insight.explanation,
        "recommendations": list(insight.recommendations or []),
        "drivers": list(insight.drivers or []),
        "model": insight.model,
        "fallback_reason": insight.fallback_reason,
        "scored_at": insight.scored_at,
        "cached_from": insight.cached_from_id,
    }


def model_call_counts(*, now: datetime, since: datetime | None = None) -> dict[str, int]:
    """Scorings by the model that produced them, and fallbacks, since `since` (default: 24 hours).

    Flat {label: n} for /metrics: one key per model, plus "fallbacks" (insights whose
    fallback_reason is set: Bedrock failed, no credentials, or the budget was spent). Copies made
    when a cached insight answers another alert are not scorings and are not counted."""
    since = since or now - timedelta(days=1)
    rows = (
        Insight.objects.filter(scored_at__gte=since, scored_at__lte=now, cached_from__isnull=True)
        .values("model")
        .annotate(n=Count("id"), fell_back=Count("id", filter=~Q(fallback_reason="")))
        .order_by()
    )
    counts: dict[str, int] = {"fallbacks": 0}
    for r in rows:
        counts[r["model"]] = r["n"]
        counts["fallbacks"] += r["fell_back"]
    return counts


def current_insight(*, entity_type: str, snapshot: Any, latest: Insight | None) -> Insight | None:
    """The insight that matches the entity's figures now: the latest stored one while it still quotes
    them, else the local model's reading of the snapshot (unsaved) — never an explanation citing
    figures the page no longer shows. None for a student with no score yet (not enough data)."""
    from insights import local_model
    from insights.features import student_features, tutor_features

    if snapshot is None or entity_type not in ("student", "tutor"):
        return latest
    features = student_features(snapshot) if entity_type == "student" else tutor_features(snapshot)
    if entity_type == "student" and features["health"] is None:
        return None
    if latest is not None and latest.features == features:
        return latest
    entity_id = snapshot.student_id if entity_type == "student" else snapshot.tutor_id
    score = local_model.score(
        entity_type=entity_type, entity_id=entity_id, features=features, cuts=health_cuts()
    )
    return Insight.from_score(
        score, entity_type=entity_type, entity_id=entity_id, scored_at=snapshot.updated_at
    )
