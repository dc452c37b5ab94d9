"""Celery interface of insights: thin, by ids."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings
from django.db import OperationalError
from django.utils import timezone

from insights.services import insight_score, insights_score_alerts, insights_score_riskiest

# Scoring tasks retry a database hiccup with backoff; their results live in the database.
SCORING = {
    "autoretry_for": (OperationalError,),
    "retry_backoff": True,
    "max_retries": 3,
    "ignore_result": True,
}


@shared_task(name="insights.score_churn", **SCORING)
def score_churn(entity_type: str, entity_id: str, alert_id: int | None = None) -> int | None:
    """Churn (student) or burnout (tutor) insight for one entity, optionally linked to an alert."""
    insight = insight_score(
        entity_type=entity_type, entity_id=entity_id, alert_id=alert_id, now=timezone.now()
    )
    return insight.pk if insight is not None else None


@shared_task(name="insights.score_alerts", **SCORING)
def score_alerts(items: list[list]) -> list[int]:
    """Insights for the alerts one batch raised: [[entity_type, entity_id, alert_id], …], scored
    together (one snapshot read, one INSERT, one push). Redelivery is harmless: within the cache
    window an alert that already has its insight keeps it."""
    scored = insights_score_alerts(items=[tuple(item) for item in items], now=timezone.now())
    return [insight.pk for insight in scored]


@shared_task(name="insights.score_riskiest", ignore_result=True)
def score_riskiest() -> dict[str, int]:
    """Beat: insights for the INSIGHTS_BEAT_TOP_N riskiest students and tutors."""
    return insights_score_riskiest(now=timezone.now(), top_n=settings.INSIGHTS_BEAT_TOP_N)
