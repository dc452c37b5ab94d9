"""Read side of the dashboard: the ranges and filters of the page, composed from the apps' selectors
into the KPI strip, the chart configurations, the alert feed's rows and drawers, and the entity pages.

The queries live with the tables they read (metrics/kpis.py, metrics/selectors.py, alerts/selectors.py,
insights/selectors.py); each runs a fixed number of queries whatever the number of rows, so the page
cost does not grow with the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from alerts.delivery import GROUP_MIN
from alerts.models import ACTIVE_STATUSES, ENTITY_PLURALS, Alert
from alerts.selectors import (
    SEVERITIES,
    alert_counts,
    alert_get,
    alert_transitions,
    alerts_page_by_severity,
    entity_alerts,
)
from alerts.selectors import alerts_by_ids as alerts_by_ids_qs
from alerts.silences import silences_for, with_muted
from alerts.thresholds import health_cuts
from dashboard.charts import drivers_chart, entity_history_chart, live_charts, subject_region_history
from insights.selectors import current_insight, entity_insights, insight_for_alert, with_insight_risk
from metrics.kpis import (
    BucketUnit,
    active_student_counts,
    first_session_success_rate,
    health_overview,
    sessions_today,
    students_at_risk,
    traffic_totals,
)
from metrics.selectors import ENTITY_MODELS, entity_get, entity_sessions, subject_region_at
from metrics.vocabulary import cell_parse

RANGES = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
DEFAULT_RANGE = "24h"
KPI_NAMES = (
    "events_per_min",
    "events_in_range",
    "sessions_today",
    "active_students",
    "ib_calls_24h",
    "avg_health",
    "students_at_risk",
    "open_alerts",
    "sessions_started",
    "sessions_completed",
    "ib_calls",
    "first_session_success_rate",
)
STATUS_FILTERS = ("all", "active", "open", "acknowledged", "resolved", "dismissed")
MUTED_FILTERS = ("show", "hide")
FEED_LIMIT = 50
ENTITY_TYPES = ("student", "tutor", "subject_region", "global")
ENTITY_ALERTS_MAX = 50  # an entity page's alerts (the page shows "50+")


def parse_range(value: str | None) -> str:
    return value if value in RANGES else DEFAULT_RANGE


def _thresholds() -> dict[str, float]:
    """The health score's bands (the runtime thresholds), for the templates that colour a score."""
    critical, warning = health_cuts()
    return {"risk_threshold": warning, "critical_threshold": critical}


# --- KPIs -------------------------------------------------------------------------------------


def _kpi_windows(*, now: datetime, start: datetime, span: timedelta) -> dict[str, tuple[datetime, datetime]]:
    """The [start, end) windows the traffic KPIs and their comparisons sum over."""
    end = now + timedelta(minutes=1)
    return {
        "cur": (start, end),
        "prev": (start - span, start),
        "last5": (now - timedelta(minutes=5), end),
        "prev5": (now - timedelta(minutes=10), now - timedelta(minutes=5)),
        "day": (now - timedelta(hours=24), end),
        "prev_day": (now - timedelta(hours=48), now - timedelta(hours=24)),
    }


def kpis(*, range_key: str, now: datetime) -> dict[str, Any]:
    """The KPI strip over a range (and /api/kpis): each figure with the one it compares against."""
    range_key = parse_range(range_key)
    span = RANGES[range_key]
    start = now - span
    traffic = traffic_totals(windows=_kpi_windows(now=now, start=start, span=span))
    cur, prev = traffic["cur"], traffic["prev"]
    sessions = sessions_today(now=now)
    active, active_prev = active_student_counts(since=start, span=span)
    critical, warning = health_cuts()
    # over the same active students as the card beside it
    health = health_overview(since=start, at_risk_below=warning, critical_below=critical)
    alerts = alert_counts(since=start, span=span)
    return {
        "range": range_key,
        "as_of": now.isoformat(),
        "events_per_min": round(traffic["last5"]["received"] / 5, 1),
        "events_per_min_prev": round(traffic["prev5"]["received"] / 5, 1),
        "events_in_range": cur["received"],
        "events_in_range_prev": prev["received"],
        "sessions_today": sessions["today"],
        "today_since": sessions["since"].isoformat(),
        "sessions_today_prev": sessions["yesterday"],
        "active_students": active,
        "active_students_prev": active_prev,
        "ib_calls_24h": traffic["day"]["ib_calls"],
        "ib_calls_24h_prev": traffic["prev_day"]["ib_calls"],
        "avg_health": health["avg"],
        "students_at_risk": health["at_risk"],
        "students_critical": health["critical"],
        "students_not_scored": health["unscored"],
        "students_scored": health["scored"],
        "risk_threshold": warning,
        "open_alerts": sum(alerts["by_severity"].values()),
        "open_alerts_by_severity": alerts["by_severity"],
        "alerts_new": alerts["new"],
        "alerts_new_prev": alerts["new_prev"],
        "sessions_started": cur["sessions_started"],
        "sessions_started_prev": prev["sessions_started"],
        "sessions_completed": cur["sessions_completed"],
        "sessions_completed_prev": prev["sessions_completed"],
        "ib_calls": cur["ib_calls"],
        "ib_calls_prev": prev["ib_calls"],
        "first_session_success_rate": first_session_success_rate(since=start, now=now),
    }


def students_at_risk_ids(*, now: datetime, range_key: str = DEFAULT_RANGE) -> list[str]:
    """The students the at-risk KPI counts for this range (bench/signal_quality.py scores this set)."""
    since = now - RANGES[parse_range(range_key)]
    at_risk = students_at_risk(since=since, below=health_cuts()[1])
    return list(at_risk.values_list("student_id", flat=True))


# --- charts: a range as buckets -----------------------------------------------------------

# range → (bucket step, bucket unit, label format)
_BUCKETS: dict[str, tuple[timedelta, BucketUnit, str]] = {
    "1h": (timedelta(minutes=1), "minute", "%H:%M"),
    "24h": (timedelta(hours=1), "hour", "%H:%M"),
    "7d": (timedelta(hours=1), "hour", "%a %H:%M"),
    "30d": (timedelta(days=1), "day", "%b %d"),  # UTC days, labelled so on the page
}


def _bucket_starts(range_key: str, now: datetime) -> list[datetime]:
    step = _BUCKETS[range_key][0]
    count = int(RANGES[range_key] / step)
    if step >= timedelta(days=1):
        last = now.replace(hour=0, minute=0, second=0, microsecond=0)
    elif step >= timedelta(hours=1):
        last = now.replace(minute=0, second=0, microsecond=0)
    else:
        last = now.replace(second=0, microsecond=0)
    return [last - step * (count - 1 - i) for i in range(count)]


def charts(*, range_key: str, now: datetime) -> dict[str, Any]:
    """The dashboard's chart configurations over a range (see dashboard/charts.py)."""
    range_key = parse_range(range_key)
    _step, unit, label_format = _BUCKETS[range_key]
    starts = _bucket_starts(range_key, now)
    return live_charts(
        starts=starts, unit=unit, label_format=label_format, since=now - RANGES[range_key], now=now
    )


# --- alert feed and explainability -------------------------------------------------------------


@dataclass(frozen=True)
class FeedFilters:
    """Severity, status and muted filters of the alert feed (from the URL; unknown values mean "all";
    muted alerts — an active silence matches them — are shown, marked, unless muted=hide)."""

    severity: str = "all"
    status: str = "all"
    muted: str = "show"

    @classmethod
    def parse(cls, severity: str | None, status: str | None, muted: str | None = None) -> FeedFilters:
        return cls(
            severity=severity if severity in SEVERITIES else "all",
            status=status if status in STATUS_FILTERS else "all",
            muted=muted if muted in MUTED_FILTERS else "show",
        )

    def _statuses(self) -> tuple[str, ...] | None:
        if self.status == "all":
            return None
        if self.status == "active":
            return tuple(ACTIVE_STATUSES)
        return (self.status,)

    def apply(self, qs: QuerySet[Alert]) -> QuerySet[Alert]:
        if self.severity != "all":
            qs = qs.filter(severity=self.severity)
        if self.muted == "hide":  # the queryset carries `muted` (alerts.silences.with_muted)
            qs = qs.filter(muted=False)  # type: ignore[misc]  # an annotation the stubs cannot see
        statuses = self._statuses()
        return qs.filter(status__in=statuses) if statuses else qs

    def matches(self, alert: Alert) -> bool:
        statuses = self._statuses()
        return (
            (self.severity == "all" or alert.severity == self.severity)
            and (statuses is None or alert.status in statuses)
            and not (self.muted == "hide" and getattr(alert, "muted", False))
        )

    def as_query(self) -> dict[str, str]:
        query = {k: v for k, v in (("severity", self.severity), ("status", self.status)) if v != "all"}
        return {**query, "muted": self.muted} if self.muted != "show" else query


def alert_feed_page(
    *, filters: FeedFilters, cursor: str | None = None, limit: int = FEED_LIMIT
) -> tuple[list[Alert], str | None]:
    """One page of the filtered feed, most severe first, each alert with its insight's risk
    (BadFeedCursor for a cursor the feed did not give out)."""
    muted = with_muted(Alert.objects.all(), now=timezone.now())
    qs = with_insight_risk(filters.apply(muted))
    return alerts_page_by_severity(qs, cursor=cursor, limit=limit)


# Alerts of one type and severity first raised within the same hour are shown as one expandable row
# once there are GROUP_MIN of them on a page (as Alertmanager groups by labels; the same number makes
# a group notification).


@dataclass
class FeedGroup:
    type: str
    label: str
    severity: str
    alerts: list[Alert]

    @property
    def key(self) -> str:
        first = min(a.first_seen for a in self.alerts)
        return f"{self.type}-{self.severity}-{first:%Y%m%d%H}"

    is_group = True  # for the templates: a group row, not an alert row

    @property
    def entity_label(self) -> str:
        return ENTITY_PLURALS.get(self.alerts[0].entity_type, "series")

    @property
    def last_seen(self) -> datetime:
        return max(a.last_seen for a in self.alerts)


def feed_rows(alerts: list[Alert]) -> list[Alert | FeedGroup]:
    """The page's rows in order, alerts of one type, severity and hour of first sighting folded into a
    group (at the place of its first member) when there are GROUP_MIN or more of them."""
    buckets: dict[tuple[str, str, str], list[Alert]] = {}
    for alert in alerts:
        buckets.setdefault((alert.type, alert.severity, f"{alert.first_seen:%Y%m%d%H}"), []).append(alert)
    rows: list[Alert | FeedGroup] = []
    placed: set[tuple[str, str, str]] = set()
    for alert in alerts:
        key = (alert.type, alert.severity, f"{alert.first_seen:%Y%m%d%H}")
        members = buckets[key]
        if len(members) < GROUP_MIN:
            rows.append(alert)
        elif key not in placed:
            placed.add(key)
            rows.append(FeedGroup(alert.type, alert.get_type_display(), alert.severity, members))
    return rows


def alerts_by_ids(*, ids: list[int]) -> list[Alert]:
    """The changed alerts of a push, each with its insight's risk and whether it is muted (its feed row
    shows both)."""
    return list(with_insight_risk(with_muted(alerts_by_ids_qs(ids=ids), now=timezone.now())))


def health_components(components: dict[str, Any] | None) -> list[dict[str, Any]]:
    """A snapshot's score components as rows {name, score, weight, why, points}: the student health
    score's deductions (points off, largest first; score and weight None) or the tutor burnout
    components (score and weight, largest weight first)."""
    parts = {n: c for n, c in (components or {}).items() if isinstance(c, dict)}
    deductions = bool(parts) and all("points" in c and "score" not in c for c in parts.values())
    rows = []
    for name, c in parts.items():
        score, weight = (None, None) if deductions else (c.get("score"), c.get("weight"))
        if deductions:
            points = c["points"]
        elif isinstance(score, int | float) and isinstance(weight, int | float):
            points = round(score * weight, 1)
        else:
            points = None
        row = {"name": name.replace("_", " "), "score": score, "weight": weight, "why": c.get("why", "")}
        rows.append({**row, "points": points})
    return sorted(rows, key=lambda r: -(r["points" if deductions else "weight"] or 0))


def _snapshot_components(snapshot: Any) -> list[dict[str, Any]]:
    """The rows of a student's health components or a tutor's burnout components ([] without)."""
    components = None
    if snapshot is not None:
        components = getattr(snapshot, "health_components", None) or getattr(
            snapshot, "burnout_components", None
        )
    return health_components(components)


def alert_panel(*, alert_id: int) -> dict[str, Any] | None:
    """The alert drawer (and the alert's page): its history, insight and entity's score components."""
    alert = alert_get(alert_id=alert_id)
    if alert is None:
        return None
    insight = insight_for_alert(alert)
    snapshot = entity_get(alert.entity_type, alert.entity_id) if alert.entity_type in ENTITY_MODELS else None
    silence = silences_for([alert], now=timezone.now()).get(alert.pk)
    alert.muted = silence is not None  # type: ignore[attr-defined]  # as with_muted annotates feed rows
    return {
        "alert": alert,
        "silence": silence,
        "transitions": alert_transitions(alert),
        "insight": insight,
        "drivers_chart": drivers_chart(insight),
        "snapshot": snapshot,
        "components": _snapshot_components(snapshot),
        **_thresholds(),
    }


# --- entity pages -----------------------------------------------------------------------------


def split_subject_region(entity_id: str) -> tuple[str, str]:
    return cell_parse(entity_id) or (entity_id, "")


def _entity_figures(*, entity_type: str, entity_id: str, now: datetime) -> dict[str, Any]:
    """An entity's snapshot, history chart, latest sessions and score components (none for the
    platform as a whole)."""
    if entity_type == "subject_region":
        subject, region = split_subject_region(entity_id)
        return {
            "snapshot": subject_region_at(subject=subject, region=region),
            "history": subject_region_history(subject=subject, region=region, now=now),
            "sessions": [],
            "components": [],
        }
    if entity_type in ENTITY_MODELS:
        snapshot = entity_get(entity_type, entity_id)
        return {
            "snapshot": snapshot,
            "history": entity_history_chart(entity_type=entity_type, entity_id=entity_id, now=now),
            "sessions": entity_sessions(entity_type=entity_type, entity_id=entity_id),
            "components": _snapshot_components(snapshot),
        }
    return {"snapshot": None, "history": None, "sessions": [], "components": []}


def entity_page(*, entity_type: str, entity_id: str, now: datetime) -> dict[str, Any] | None:
    """Everything an entity page shows, or None when nothing is known about the entity."""
    if entity_type not in ENTITY_TYPES:
        return None
    figures = _entity_figures(entity_type=entity_type, entity_id=entity_id, now=now)
    found = with_muted(entity_alerts(entity_type=entity_type, entity_id=entity_id), now=now)
    alerts = list(with_insight_risk(found)[:ENTITY_ALERTS_MAX])
    insights = entity_insights(entity_type=entity_type, entity_id=entity_id)
    if figures["snapshot"] is None and not alerts and not insights and not figures["sessions"]:
        return None
    insight = current_insight(
        entity_type=entity_type, snapshot=figures["snapshot"], latest=insights[0] if insights else None
    )
    return {
        "entity_type": entity_type,
        "entity_id": entity_id,
        **figures,
        **_thresholds(),
        "alerts": alerts,
        "alerts_max": ENTITY_ALERTS_MAX,
        "insight": insight,
        "insights": [i for i in insights if insight is None or i.pk != insight.pk],
        "drivers_chart": drivers_chart(insight),
    }
