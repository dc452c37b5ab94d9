"""Chart.js-ready configurations (data only; the page picks colours from its theme), built from the
apps' series. These take datetimes and buckets; dashboard/selectors.py turns a range into them."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from insights.models import Insight
from metrics.kpis import (
    BucketUnit,
    events_series,
    health_distribution,
    ib_calls_by_reason,
    sessions_series,
    supply_demand_by_subject,
)
from metrics.selectors import entity_history, supply_demand_daily

HISTORY_DAYS = 30


def _sessions_chart(*, starts: list[datetime], unit: BucketUnit, label_format: str, now: datetime) -> dict:
    """Sessions started vs completed per bucket over the range (by event time)."""
    series = sessions_series(starts=starts, unit=unit, now=now)
    return {
        "type": "line",
        "labels": [(b if unit == "day" else timezone.localtime(b)).strftime(label_format) for b in starts],
        "datasets": [
            {"label": "started", "data": series["started"], "color": "info"},
            {"label": "completed", "data": series["completed"], "color": "ok"},
        ],
    }


def live_charts(
    *, starts: list[datetime], unit: BucketUnit, label_format: str, since: datetime, now: datetime
) -> dict[str, Any]:
    """The dashboard's charts: sessions per bucket (`starts`, of one `unit`), IB reasons since `since`,
    the health bands, supply and demand per subject, and the last hour's events per minute."""
    sessions = _sessions_chart(starts=starts, unit=unit, label_format=label_format, now=now)
    reasons = ib_calls_by_reason(since=since)
    health = health_distribution(now=now)
    supply = supply_demand_by_subject()
    events = events_series(now=now)
    return {
        "events": {
            "type": "line",
            "mode": "append",
            "labels": [p["t"] for p in events],
            "datasets": [{"label": "events/min", "data": [p["v"] for p in events], "color": "info"}],
        },
        "sessions": sessions,
        "ib_reasons": {
            "type": "bar",
            "horizontal": True,
            "labels": [r.replace("_", " ") for r in reasons],
            "datasets": [{"label": "IB calls", "data": list(reasons.values()), "color": "warn"}],
        },
        "health": {
            "type": "bar",
            "labels": health["labels"],
            "datasets": [{"label": "students", "data": health["counts"], "color": "ok", "band": True}],
        },
        "supply_demand": {
            "type": "bar",
            "labels": supply["labels"],
            "max": 100,
            "datasets": [
                {"label": "demand score", "data": supply["demand"], "color": "crit"},
                {"label": "supply score", "data": supply["supply"], "color": "ok"},
            ],
        },
    }


def drivers_chart(insight: Insight | None) -> dict[str, Any] | None:
    drivers = [d for d in (insight.drivers if insight else []) or [] if isinstance(d, dict)]
    if not drivers:
        return None
    drivers = sorted(drivers, key=lambda d: -abs(d.get("contribution") or 0))[:8]
    return {
        "type": "bar",
        "horizontal": True,
        "labels": [f"{d.get('feature', '?')} = {d.get('value', '–')}" for d in drivers],
        "datasets": [
            {
                "label": "contribution",
                "data": [d.get("contribution") or 0 for d in drivers],
                "color": "crit",
                "signed": True,
            }
        ],
    }


def _days(now: datetime, days: int) -> list[datetime]:
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return [today - timedelta(days=days - 1 - i) for i in range(days)]


# entity type → the daily series its history chart shows: (label, series field, colour)
_HISTORY_DATASETS = {
    "student": (
        ("sessions completed", "sessions_completed", "ok"),
        ("unsuccessful", "sessions_unsuccessful", "crit"),
        ("IB calls", "ib_calls", "warn"),
    ),
    "tutor": (
        ("sessions taught", "sessions_completed", "ok"),
        ("unsuccessful", "sessions_unsuccessful", "crit"),
        ("hours taught", "hours", "info"),
    ),
}


def entity_history_chart(
    *, entity_type: str, entity_id: str, now: datetime, days: int = HISTORY_DAYS
) -> dict[str, Any]:
    """A student's or tutor's daily history as a bar chart."""
    series = entity_history(entity_type=entity_type, entity_id=entity_id, days=days, now=now)
    return {
        "type": "bar",
        "labels": [datetime.fromisoformat(p["date"]).strftime("%b %d") for p in series],
        "datasets": [
            {"label": label, "data": [p[field] for p in series], "color": color}
            for label, field, color in _HISTORY_DATASETS[entity_type]
        ],
    }


def subject_region_history(*, subject: str, region: str, now: datetime, days: int = HISTORY_DAYS) -> dict:
    day_list = _days(now, days)
    s = supply_demand_daily(subject=subject, region=region, days=day_list)
    return {
        "type": "line",
        "labels": [d.strftime("%b %d") for d in day_list],
        "max": 100,
        "datasets": [
            {"label": "demand score", "data": [round(v, 1) for v in s["demand"]], "color": "crit"},
            {"label": "supply score", "data": [round(v, 1) for v in s["supply"]], "color": "ok"},
        ],
    }
