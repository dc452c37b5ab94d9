"""The model-quality page (/quality, staff only) and its API twin: the dashboard's ranges over
insights.quality, with the reliability chart as a spec for the dashboard's Chart.js glue."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from alerts.models import DismissReason
from dashboard.selectors import RANGES, parse_range
from insights.quality import quality_report


def quality_for(*, range_key: str, now: datetime) -> dict[str, Any]:
    return {"range": range_key, **quality_report(start=now - RANGES[range_key], end=now)}


def reliability_chart(calibration: dict) -> dict[str, Any]:
    """Grouped bars per risk bin: the mean predicted risk and the observed stop rate, in % (a gap where
    the bin is too thin)."""

    def pct(v):
        return None if v is None else round(v * 100, 1)

    bins = calibration["bins"]
    return {
        "type": "bar",
        "max": 100,
        "labels": [f"{b['low']:.0%}–{b['high']:.0%} (n={b['count']})" for b in bins],
        "datasets": [
            {"label": "predicted risk, mean %", "color": "info", "data": [pct(b["mean_risk"]) for b in bins]},
            {"label": "stopped booking, %", "color": "crit", "data": [pct(b["observed_rate"]) for b in bins]},
        ],
    }


@require_GET
def page(request: HttpRequest) -> HttpResponse:
    range_key = parse_range(request.GET.get("range"))
    report = quality_for(range_key=range_key, now=timezone.now())
    context = {
        "report": report,
        "range_key": range_key,
        "ranges": list(RANGES),
        "reasons": DismissReason.choices,
        "chart": reliability_chart(report["calibration"]),
    }
    return render(request, "dashboard/quality.html", context)
