from __future__ import annotations

from typing import Literal

from django.utils import timezone
from ninja import Router

from dashboard.quality import quality_for
from dashboard.selectors import kpis

router = Router(tags=["kpis"])


@router.get("/kpis", summary="Dashboard KPIs over a time range")
def get_kpis(request, range: Literal["1h", "24h", "7d", "30d"] = "24h"):  # noqa: A002 - the public name
    return kpis(range_key=range, now=timezone.now())


@router.get("/quality", tags=["quality"], summary="Model quality: operator labels, calibration, suggestion")
def get_quality(request, range: Literal["1h", "24h", "7d", "30d"] = "24h"):  # noqa: A002 - as /api/kpis
    """Per alert type and per insight model: raised, acted on, dismissed, precision (null under
    QUALITY_MIN_LABELS labels) and dismissal reasons; churn-risk calibration (reliability bins, Brier
    score; null where too thin) and the suggested health cut (null without enough data)."""
    return quality_for(range_key=range, now=timezone.now())
