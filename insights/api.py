"""GET /api/insights: stored churn and burnout insights, newest first."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from ninja import Field, Query, Router, Schema

from insights.selectors import insight_as_dict, insight_labels, insight_list

router = Router(tags=["insights"])


class Driver(Schema):
    feature: str
    value: float
    contribution: float = Field(description="log-odds added to the risk by this feature")


class InsightOut(Schema):
    id: int
    entity_type: str
    entity_id: str
    alert_id: int | None
    risk: float = Field(ge=0, le=1)
    level: str
    explanation: str
    recommendations: list[str]
    drivers: list[Driver]
    model: str = Field(description='"local:…" or "bedrock:<model id>"')
    fallback_reason: str = Field(description="why the local model answered instead of Bedrock, if it did")
    scored_at: datetime
    label: Literal["acted_on", "dismissed"] | None = Field(
        None,
        description="what an operator made of the alert it scored: acted on or dismissed (null: not yet)",
    )
    label_reason: str | None = Field(None, description="the dismissal reason, one of the fixed list")
    cached_from: int | None = Field(
        None, description="set when a cached insight answered this alert: the id of the scored original"
    )


class InsightList(Schema):
    results: list[InsightOut]


class InsightFilters(Schema):
    entity_type: Literal["student", "tutor"] | None = None
    entity_id: str | None = Field(None, max_length=64)
    alert_id: int | None = None
    limit: int = Field(50, ge=1, le=500)


@router.get("", response=InsightList, summary="Insights, newest first, with filters")
def list_insights(request, filters: Query[InsightFilters]):
    rows = insight_list(
        entity_type=filters.entity_type,
        entity_id=filters.entity_id,
        alert_id=filters.alert_id,
        limit=filters.limit,
    )
    labels = insight_labels(rows)
    return {"results": [insight_as_dict(i, labels) for i in rows]}
