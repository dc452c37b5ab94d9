"""Scoring an entity into an Insight: local model always, Bedrock when configured, within a cache."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings

from insights import local_model
from insights.features import ENTITY_TYPES, features_for
from insights.models import Insight

logger = logging.getLogger(__name__)


def _cached(*, entity_type: str, entity_id: str, features: dict[str, float], now: datetime) -> Insight | None:
    """The entity's latest insight when it is inside the cache window and its features have not
    moved materially since (local_model.features_moved)."""
    minutes = settings.INSIGHTS_CACHE_MINUTES
    if minutes <= 0:
        return None
    latest = (
        Insight.objects.filter(
            entity_type=entity_type, entity_id=entity_id, scored_at__gte=now - timedelta(minutes=minutes)
        )
        .order_by("-scored_at", "-pk")
        .first()
    )
    if latest is None or local_model.features_moved(
        entity_type=entity_type, before=latest.features, after=features
    ):
        return None
    return latest


def insight_score(
    *, entity_type: str, entity_id: str, alert_id: int | None = None, now: datetime
) -> Insight | None:
    """Score one student (churn) or tutor (burnout) and store the Insight; None when metrics has no
    snapshot for it. Within the cache window an unchanged entity keeps its insight (linked to the
    alert if it had none)."""
    if entity_type not in ENTITY_TYPES:
        raise ValueError(f"unknown entity type {entity_type!r}")
    features = features_for(entity_type=entity_type, entity_id=entity_id)
    if features is None:
        logger.info("no snapshot to score", extra={"entity_type": entity_type, "entity_id": entity_id})
        return None
    cached = _cached(entity_type=entity_type, entity_id=entity_id, features=features, now=now)
    if cached is not None:
        if alert_id is not None and cached.alert_id is None:
            Insight.objects.filter(pk=cached.pk, alert_id__isnull=True).update(alert_id=alert_id)
            cached.alert_id = alert_id
        logger.debug("insight cache hit", extra={"entity_id": entity_id, "insight_id": cached.pk})
        return cached
    result = local_model.score(entity_type=entity_type, entity_id=entity_id, features=features)
    insight = Insight.objects.create(
        entity_type=entity_type,
        entity_id=entity_id,
        alert_id=alert_id,
        risk=result.risk,
        level=result.level,
        explanation=result.explanation,
        recommendations=result.recommendations,
        drivers=result.drivers,
        features=features,
        model=result.model,
        fallback_reason="",
        scored_at=now,
    )
    logger.info(
        "insight scored",
        extra={
            "entity_type": entity_type,
            "entity_id": entity_id,
            "alert_id": alert_id,
            "risk": insight.risk,
            "model": insight.model,
        },
    )
    return insight
