"""Reads of insights: the API list, the model-call counts for /metrics, the insight an alert or an
entity page shows, the alerts an insight changes on the dashboard."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Subquery

from alerts.models import ACTIVE_STATUSES, Alert
from alerts.thresholds import health_cuts
from insights.models import Insight

BEDROCK_PREFIX = "bedrock:"
# fallback_reason prefix of a Bedrock call that was made and failed (it still spent its budget slot).
BEDROCK_FAILED_PREFIX = "bedrock error"
# Drawers refreshed per push at most (each costs the drawer's insight lookup).
INSIGHT_PUSH_MAX_DRAWERS = 50


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


def with_insight_risk(qs: QuerySet[Alert]) -> QuerySet[Alert]:
    """Each alert's `insight_risk`: the risk of the latest insight scored for it (None without one),
    shown on its feed row. One correlated subquery on the indexed alert_id, not a query per row."""
    latest = Insight.objects.filter(alert_id=OuterRef("pk")).order_by("-scored_at", "-pk")
    return qs.annotate(insight_risk=Subquery(latest.values("risk")[:1]))


def insight_for_alert(alert: Alert) -> Insight | None:
    """The insight scored for this alert, else the latest one for its entity."""
    linked = Insight.objects.filter(alert_id=alert.pk).order_by("-scored_at").first()
    if linked is not None:
        return linked
    return (
        Insight.objects.filter(entity_type=alert.entity_type, entity_id=alert.entity_id)
        .order_by("-scored_at")
        .first()
    )


def entity_insights(*, entity_type: str, entity_id: str, limit: int = 10) -> list[Insight]:
    """An entity's latest scorings, newest first; copies (a cached insight answering another alert)
    are not new scorings."""
    return list(
        Insight.objects.filter(
            entity_type=entity_type, entity_id=entity_id, cached_from__isnull=True
        ).order_by("-scored_at")[:limit]
    )


def alerts_showing_insights(*, insight_ids: list[int]) -> tuple[list[int], list[Alert]]:
    """For stored insights: (ids of the alerts they were scored for: their feed rows change, the
    alerts whose drawer shows one of them: those, and the active alerts of an alert-less insight's
    entity that have no insight of their own). Two queries whatever the number of insights."""
    insights = list(
        Insight.objects.filter(pk__in=insight_ids).values_list("alert_id", "entity_type", "entity_id")
    )
    linked = sorted({a for a, _, _ in insights if a is not None})
    entities = Q()
    for entity_type, entity_id in sorted({(t, e) for a, t, e in insights if a is None}):
        entities |= Q(entity_type=entity_type, entity_id=entity_id)
    drawers = Q(pk__in=linked)
    if entities:
        without_own = ~Exists(Insight.objects.filter(alert_id=OuterRef("pk")))
        drawers = cast(Q, drawers | (entities & Q(status__in=ACTIVE_STATUSES) & without_own))
    if not linked and not entities:
        return [], []
    return linked, list(Alert.objects.filter(drawers).order_by("-last_seen")[:INSIGHT_PUSH_MAX_DRAWERS])
