"""Fragments shared by the first page load and the live WebSocket updates (htmx out-of-band swaps)."""

from __future__ import annotations

from datetime import datetime

from django.template.loader import render_to_string

from alerts.models import Alert
from dashboard.selectors import events_series, kpis, recent_alerts


def kpi_context(*, range_key: str, now: datetime) -> dict:
    values = kpis(range_key=range_key, now=now)
    return {"kpis": values, "series": events_series(now=now)}


def render_state(*, range_key: str, now: datetime) -> str:
    """Everything the page shows live, as OOB fragments (sent on connect: the catch-up after a reconnect)."""
    return render_to_string(
        "dashboard/_live_state.html",
        {**kpi_context(range_key=range_key, now=now), "alerts": recent_alerts(), "oob": True},
    )


def render_update(*, range_key: str, now: datetime, created: list[int], updated: list[int]) -> str:
    context = {**kpi_context(range_key=range_key, now=now), "oob": True}
    context["new_alerts"] = list(Alert.objects.filter(pk__in=created).order_by("last_seen", "id"))
    context["changed_alerts"] = list(Alert.objects.filter(pk__in=set(updated) - set(created)))
    return render_to_string("dashboard/_live_update.html", context)
