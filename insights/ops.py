"""Operations entry points of insights: the figures /metrics reports, and retention.

Called by plain imports from iops/ops.py and iops/retention.py (the composition root)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db.models import Count

from insights.models import Insight
from insights.selectors import model_call_counts
from insights.services import insights_purge
from iops.lib.prune import PruneBudget


@dataclass(frozen=True)
class InsightsCounts:
    stored: list[tuple[str, bool, int]]  # (model, fell back?, count) of stored scorings
    model_calls: dict[str, int]  # churn scorings of the last 24 hours by model, and "fallbacks"


def insights_counts(*, now: datetime) -> InsightsCounts:
    rows = (  # copies (a cached insight answering another alert) are not scorings
        Insight.objects.filter(cached_from__isnull=True)
        .values("model", "fallback_reason")
        .annotate(n=Count("id"))
        .order_by()
    )
    merged: dict[tuple[str, bool], int] = {}
    for r in rows:
        key = (r["model"], bool(r["fallback_reason"]))
        merged[key] = merged.get(key, 0) + r["n"]
    return InsightsCounts(
        stored=[(model, fell_back, n) for (model, fell_back), n in sorted(merged.items())],
        model_calls=model_call_counts(now=now),
    )


def insights_prune(*, now: datetime, budget: PruneBudget) -> int:
    """Insights scored more than AGGREGATE_RETENTION_DAYS ago and spent Bedrock budget counters; the
    number of insights deleted. Runs whole once started (insights_purge has no deadline)."""
    if budget.expired():
        return 0
    n = insights_purge(now=now, days=settings.AGGREGATE_RETENTION_DAYS, batch_size=budget.batch_size)
    budget.record(Insight._meta.label, n)
    return n
