"""Fragments shared by the first page load and the live WebSocket updates (htmx out-of-band swaps).

The page, the catch-up state sent on connect and every coalesced update render the same templates
from the same context builders, so what a socket shows cannot drift from a reload.
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlencode

from django.template.loader import render_to_string

from dashboard.selectors import (
    FEED_LIMIT,
    RANGES,
    SEVERITIES,
    STATUS_FILTERS,
    FeedFilters,
    alert_feed_page,
    alerts_by_ids,
    charts,
    drivers_chart,
    entity_page,
    feed_rows,
    insight_for_alert,
    kpis,
)
from insights.selectors import alerts_showing_insights


def live_query(*, range_key: str, filters: FeedFilters) -> str:
    return urlencode({"range": range_key, **filters.as_query()})


def feed_context(*, filters: FeedFilters, cursor: str | None = None) -> dict:
    """A page of the alert feed: its rows (alerts, and groups of alerts raised together), the cursor
    of the next page and the query the "show more" link carries."""
    alerts, next_cursor = alert_feed_page(filters=filters, cursor=cursor)
    return {
        "rows": feed_rows(alerts),
        "next_cursor": next_cursor,
        "feed_query": urlencode(filters.as_query()),
    }


def live_context(*, range_key: str, filters: FeedFilters, now: datetime) -> dict:
    """Everything inside #live: KPIs, chart data, the filtered alert feed, the toolbar."""
    return {
        "kpis": kpis(range_key=range_key, now=now),
        "charts": charts(range_key=range_key, now=now),
        **feed_context(filters=filters),
        "range_key": range_key,
        "filters": filters,
        "ranges": [{"key": r, "query": live_query(range_key=r, filters=filters)} for r in RANGES],
        "severities": SEVERITIES,
        "statuses": STATUS_FILTERS,
        "live_query": live_query(range_key=range_key, filters=filters),
        "export_query": urlencode(filters.as_query()),
        "panel": True,
    }


def render_state(*, range_key: str, filters: FeedFilters | None = None, now: datetime) -> str:
    """Everything the page shows live, as OOB fragments (sent on connect: the catch-up after a reconnect)."""
    filters = filters or FeedFilters()
    context = {
        "kpis": kpis(range_key=range_key, now=now),
        "charts": charts(range_key=range_key, now=now),
        **feed_context(filters=filters),
        "filters": filters,
        "panel": True,
        "oob": True,
    }
    return render_to_string("dashboard/_live_state.html", context)


def render_update(
    *,
    range_key: str,
    filters: FeedFilters | None = None,
    now: datetime,
    created: list[int],
    updated: list[int],
    insights: list[int] | None = None,
) -> str:
    """KPIs and charts, plus the changed alerts: rows that match the filters go (back) on top of
    the feed, rows that no longer match are removed. Stored insights re-render the rows of the
    alerts they were scored for (their risk) and the insight section of an open alert drawer.

    More changed alerts than the feed's first page holds (a flood): the first page is sent whole
    instead, as a reload would show it (a "show more" the user opened closes), so an update's cost
    is bounded by the page, not by how much changed."""
    filters = filters or FeedFilters()
    insight_alerts, drawers = alerts_showing_insights(insight_ids=insights) if insights else ([], [])
    ids = sorted(set(created) | set(updated) | set(insight_alerts))
    context: dict = {
        "drawers": [_drawer_insight(alert) for alert in drawers],
        "kpis": kpis(range_key=range_key, now=now),
        "charts": charts(range_key=range_key, now=now),
        "panel": True,
        "oob": True,
    }
    if len(ids) > FEED_LIMIT:
        context.update(feed_context(filters=filters), feed_replaced=True)
    else:
        changed = alerts_by_ids(ids=ids)
        context["shown_alerts"] = [a for a in changed if filters.matches(a)]
        context["hidden_alerts"] = [a for a in changed if not filters.matches(a)]
    return render_to_string("dashboard/_live_update.html", context)


def _drawer_insight(alert) -> dict:
    """The context of an alert drawer's insight section (_alert_panel.html), as a reload shows it."""
    insight = insight_for_alert(alert)
    return {"alert": alert, "insight": insight, "drivers_chart": drivers_chart(insight)}


# The parts of an entity page that update live, each a template whose root element has a fixed id.
ENTITY_PARTS = ("head", "snapshot", "history", "components", "insight", "alerts", "sessions")


def render_entity(*, entity_type: str, entity_id: str, now: datetime) -> dict[str, str] | None:
    """An entity page's live parts as out-of-band fragments ({part: html}, ENTITY_PARTS order), or
    None when nothing is known about the entity: the templates and context the page renders."""
    data = entity_page(entity_type=entity_type, entity_id=entity_id, now=now)
    if data is None:
        return None
    context = {**data, "oob": True}
    return {part: render_to_string(f"dashboard/_entity_{part}.html", context) for part in ENTITY_PARTS}
