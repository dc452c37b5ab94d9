"""Read side of the dashboard and the read API: KPIs, chart series, the alert feed, entity pages.

Every function runs a fixed number of queries whatever the number of rows (aggregates in the
database, never a query per row): the page cost must not grow with the data.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import (
    Avg,
    Case,
    Count,
    Exists,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import TruncDay, TruncHour
from django.utils import timezone

from alerts import thresholds
from alerts.delivery import GROUP_MIN
from alerts.models import ACTIVE_STATUSES, ENTITY_PLURALS, SEVERITY_RANK, Alert
from alerts.silences import silences_for, with_muted
from insights.models import Insight
from insights.selectors import current_insight
from metrics.models import (
    GlobalMinute,
    Session,
    StudentHourly,
    StudentSnapshot,
    SubjectRegionSnapshot,
    SupplyDemandReading,
    TutorSnapshot,
)
from metrics.selectors import (
    active_students,
    data_coverage_start,
    entity_history,
    health_overview,
    students_at_risk,
)
from metrics.vocabulary import IB_REASONS, cell_parse

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
SEVERITIES = ("critical", "warning", "info")
STATUS_FILTERS = ("all", "active", "open", "acknowledged", "resolved", "dismissed")
MUTED_FILTERS = ("show", "hide")
FEED_LIMIT = 50
HISTORY_DAYS = 30
ENTITY_TYPES = ("student", "tutor", "subject_region", "global")


def parse_range(value: str | None) -> str:
    return value if value in RANGES else DEFAULT_RANGE


# --- KPIs -------------------------------------------------------------------------------------


def _window(field: str, start: datetime, end: datetime) -> Q:
    return Q(**{f"{field}__gte": start, f"{field}__lt": end})


def kpis(*, range_key: str, now: datetime) -> dict[str, Any]:
    range_key = parse_range(range_key)
    span = RANGES[range_key]
    start = now - span
    end = now + timedelta(minutes=1)
    windows = {
        "cur": (start, end),
        "prev": (start - span, start),
        "last5": (now - timedelta(minutes=5), end),
        "prev5": (now - timedelta(minutes=10), now - timedelta(minutes=5)),
        "day": (now - timedelta(hours=24), end),
        "prev_day": (now - timedelta(hours=48), now - timedelta(hours=24)),
    }
    columns = ("received", "sessions_started", "sessions_completed", "ib_calls")
    # One scan of the per-minute series for every window and column.
    agg = GlobalMinute.objects.filter(
        minute__gte=min(w[0] for w in windows.values()), minute__lt=end
    ).aggregate(
        **{
            f"{name}__{col}": Sum(col, filter=_window("minute", a, b), default=0)
            for name, (a, b) in windows.items()
            for col in columns
        }
    )
    m = {k: int(v or 0) for k, v in agg.items()}

    # "Today" starts at midnight in the display zone (the request's or socket's active zone).
    midnight = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
    yesterday = midnight - timedelta(days=1)
    same_time_yesterday = now - timedelta(days=1)
    sessions = Session.objects.filter(
        Q(started_at__gte=yesterday) | Q(completed_at__gte=yesterday)
    ).aggregate(
        today=Count("id", filter=Q(started_at__gte=midnight) | Q(completed_at__gte=midnight)),
        yesterday=Count(
            "id",
            filter=_window("started_at", yesterday, same_time_yesterday)
            | _window("completed_at", yesterday, same_time_yesterday),
        ),
    )
    hour0 = start.replace(minute=0, second=0, microsecond=0)
    active = active_students(since=start).count()
    active_prev = (
        StudentHourly.objects.filter(hour__gte=hour0 - span, hour__lt=hour0)
        .values("student_id")
        .distinct()
        .count()
    )
    health = health_overview(
        since=start,
        at_risk_below=thresholds.get("ALERT_LOW_HEALTH_WARNING"),
        critical_below=thresholds.get("ALERT_LOW_HEALTH_CRITICAL"),
    )  # over the same active students as the card beside it
    # Only sessions known to be firsts (a month of our own data before them): on a fresh install every
    # established student's next session would otherwise count as a first.
    coverage = data_coverage_start()
    known_from = coverage + timedelta(days=settings.FIRST_SESSION_LOOKBACK_DAYS) if coverage else now
    firsts = StudentSnapshot.objects.filter(first_session_at__gte=max(start, known_from)).aggregate(
        total=Count("id"), ok=Count("id", filter=Q(first_session_ok=True))
    )
    active_q = Q(status__in=ACTIVE_STATUSES)
    alerts = Alert.objects.filter(active_q | Q(first_seen__gte=start - span)).aggregate(
        **{s: Count("id", filter=active_q & Q(severity=s)) for s in SEVERITIES},
        new=Count("id", filter=Q(first_seen__gte=start)),
        new_prev=Count("id", filter=_window("first_seen", start - span, start)),
    )
    by_severity = {s: alerts[s] for s in SEVERITIES}
    return {
        "range": range_key,
        "as_of": now.isoformat(),
        "events_per_min": round(m["last5__received"] / 5, 1),
        "events_per_min_prev": round(m["prev5__received"] / 5, 1),
        "events_in_range": m["cur__received"],
        "events_in_range_prev": m["prev__received"],
        "sessions_today": sessions["today"],
        "today_since": midnight.isoformat(),
        "sessions_today_prev": sessions["yesterday"],
        "active_students": active,
        "active_students_prev": active_prev,
        "ib_calls_24h": m["day__ib_calls"],
        "ib_calls_24h_prev": m["prev_day__ib_calls"],
        "avg_health": health["avg"],
        "students_at_risk": health["at_risk"],
        "students_critical": health["critical"],
        "students_not_scored": health["unscored"],
        "students_scored": health["scored"],
        "risk_threshold": thresholds.get("ALERT_LOW_HEALTH_WARNING"),
        "open_alerts": sum(by_severity.values()),
        "open_alerts_by_severity": by_severity,
        "alerts_new": alerts["new"],
        "alerts_new_prev": alerts["new_prev"],
        "sessions_started": m["cur__sessions_started"],
        "sessions_started_prev": m["prev__sessions_started"],
        "sessions_completed": m["cur__sessions_completed"],
        "sessions_completed_prev": m["prev__sessions_completed"],
        "ib_calls": m["cur__ib_calls"],
        "ib_calls_prev": m["prev__ib_calls"],
        "first_session_success_rate": round(firsts["ok"] / firsts["total"], 3) if firsts["total"] else None,
    }


# --- chart series -----------------------------------------------------------------------------


def events_series(*, now: datetime, minutes: int = 60) -> list[dict[str, Any]]:
    """Events received per minute (by arrival) over the last hour, zero-filled."""
    start = (now - timedelta(minutes=minutes - 1)).replace(second=0, microsecond=0)
    rows = dict(
        GlobalMinute.objects.filter(minute__gte=start, minute__lte=now).values_list("minute", "received")
    )
    return [
        {
            "t": timezone.localtime(start + timedelta(minutes=i)).strftime("%H:%M"),
            "v": rows.get(start + timedelta(minutes=i), 0),
        }
        for i in range(minutes)
    ]


# range → (bucket step, database truncation or None for raw minutes, label format)
_BUCKETS = {
    "1h": (timedelta(minutes=1), None, "%H:%M"),
    "24h": (timedelta(hours=1), TruncHour, "%H:%M"),
    "7d": (timedelta(hours=1), TruncHour, "%a %H:%M"),
    "30d": (timedelta(days=1), TruncDay, "%b %d"),  # UTC days, labelled so on the page
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


def sessions_series(*, range_key: str, now: datetime) -> dict[str, Any]:
    """Sessions started vs completed per bucket over the range (by event time)."""
    range_key = parse_range(range_key)
    _step, trunc, fmt = _BUCKETS[range_key]
    starts = _bucket_starts(range_key, now)
    qs = GlobalMinute.objects.filter(minute__gte=starts[0], minute__lte=now)
    if trunc is None:
        rows = {r[0]: r[1:] for r in qs.values_list("minute", "sessions_started", "sessions_completed")}
    else:
        rows = {
            r[0]: r[1:]
            for r in qs.annotate(bucket=trunc("minute", tzinfo=UTC))  # UTC buckets whatever the display zone
            .values("bucket")
            .annotate(s=Sum("sessions_started"), c=Sum("sessions_completed"))
            .values_list("bucket", "s", "c")
        }
    return {
        "labels": [(b if trunc is TruncDay else timezone.localtime(b)).strftime(fmt) for b in starts],
        "started": [int(rows.get(b, (0, 0))[0] or 0) for b in starts],
        "completed": [int(rows.get(b, (0, 0))[1] or 0) for b in starts],
    }


def ib_calls_by_reason(*, range_key: str, now: datetime) -> dict[str, int]:
    start = (now - RANGES[parse_range(range_key)]).replace(minute=0, second=0, microsecond=0)
    agg = StudentHourly.objects.filter(hour__gte=start).aggregate(
        **{reason: Sum(f"ib_{reason}", default=0) for reason in IB_REASONS}
    )
    return {reason: int(agg[reason] or 0) for reason in IB_REASONS}


def health_distribution(*, now: datetime) -> dict[str, Any]:
    """Students (updated in 30 days) by our health score, in bands of 10."""
    bands = [(lo, lo + 10) for lo in range(0, 100, 10)]
    agg = StudentSnapshot.objects.filter(
        updated_at__gte=now - timedelta(days=30), health_score__isnull=False
    ).aggregate(
        **{
            f"b{lo}": Count(
                "id",
                filter=Q(health_score__gte=lo) & (Q(health_score__lt=hi) if hi < 100 else Q()),
            )
            for lo, hi in bands
        }
    )
    return {"labels": [f"{lo}–{hi}" for lo, hi in bands], "counts": [agg[f"b{lo}"] for lo, _ in bands]}


def supply_demand_by_subject(*, limit: int = 12) -> dict[str, Any]:
    """Mean platform demand and supply scores per subject across regions, most demanded first."""
    rows = list(
        SubjectRegionSnapshot.objects.values("subject")
        .annotate(
            demand=Avg("platform_demand_score"),
            supply=Avg("platform_supply_score"),
            short=Count("id", filter=Q(balance_status="high_demand")),
        )
        .order_by("-demand", "subject")[:limit]
    )
    return {
        "labels": [r["subject"] for r in rows],
        "demand": [round(r["demand"], 1) if r["demand"] is not None else None for r in rows],
        "supply": [round(r["supply"], 1) if r["supply"] is not None else None for r in rows],
        "short": [r["short"] for r in rows],
    }


def charts(*, range_key: str, now: datetime) -> dict[str, Any]:
    """Chart.js-ready configurations (data only; the page picks colours from its theme)."""
    sessions = sessions_series(range_key=range_key, now=now)
    reasons = ib_calls_by_reason(range_key=range_key, now=now)
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
        "sessions": {
            "type": "line",
            "labels": sessions["labels"],
            "datasets": [
                {"label": "started", "data": sessions["started"], "color": "info"},
                {"label": "completed", "data": sessions["completed"], "color": "ok"},
            ],
        },
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


def with_insight_risk(qs: QuerySet[Alert]) -> QuerySet[Alert]:
    """Each alert's `insight_risk`: the risk of the latest insight scored for it (None without one),
    shown on its feed row. One correlated subquery on the indexed alert_id, not a query per row."""
    latest = Insight.objects.filter(alert_id=OuterRef("pk")).order_by("-scored_at", "-pk")
    return qs.annotate(insight_risk=Subquery(latest.values("risk")[:1]))


_SEVERITY_ORDER = Case(
    *(When(severity=s, then=Value(rank)) for s, rank in SEVERITY_RANK.items()), output_field=IntegerField()
)


class BadFeedCursor(ValueError):
    pass


def _feed_cursor(alert: Alert) -> str:
    key = [SEVERITY_RANK[alert.severity], alert.last_seen.isoformat(), alert.pk]
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


def _decode_feed_cursor(cursor: str) -> tuple[int, datetime, int]:
    """(severity rank, last_seen, id) of the row a feed cursor names; BadFeedCursor for anything else."""
    try:
        rank, seen, pk = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        seen = datetime.fromisoformat(seen)
        if (
            type(rank) is not int
            or rank not in SEVERITY_RANK.values()
            or type(pk) is not int
            or not 0 <= pk < 2**63
            or seen.tzinfo is None
        ):
            raise TypeError
        seen.astimezone(UTC)  # OverflowError: no UTC instant
    except (ValueError, TypeError, OverflowError, UnicodeDecodeError):
        raise BadFeedCursor("invalid cursor") from None
    return rank, seen, pk


def alert_feed_page(
    *, filters: FeedFilters, cursor: str | None = None, limit: int = FEED_LIMIT
) -> tuple[list[Alert], str | None]:
    """One page of the feed, most severe first, then the most recently seen; the cursor (opaque, the
    last row's severity, last_seen and id) continues after the last row, however the rows move."""
    muted = with_muted(Alert.objects.all(), now=timezone.now())
    qs = with_insight_risk(filters.apply(muted)).annotate(severity_rank=_SEVERITY_ORDER)
    if cursor:
        rank, seen, pk = _decode_feed_cursor(cursor)
        qs = qs.filter(
            Q(severity_rank__lt=rank)
            | Q(severity_rank=rank, last_seen__lt=seen)
            | Q(severity_rank=rank, last_seen=seen, pk__lt=pk)
        )
    rows = list(qs.order_by("-severity_rank", "-last_seen", "-id")[: limit + 1])
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], _feed_cursor(rows[limit - 1])


def alert_feed(*, filters: FeedFilters, limit: int = FEED_LIMIT) -> list[Alert]:
    """The feed's first page (see alert_feed_page)."""
    return alert_feed_page(filters=filters, limit=limit)[0]


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


def recent_alerts(*, limit: int = FEED_LIMIT) -> list[Alert]:
    return alert_feed(filters=FeedFilters(), limit=limit)


def alerts_by_ids(*, ids: list[int]) -> list[Alert]:
    muted = with_muted(Alert.objects.filter(pk__in=ids), now=timezone.now())
    return list(with_insight_risk(muted).order_by("last_seen", "id"))


# Drawers refreshed per push at most (each costs the drawer's insight lookup).
INSIGHT_PUSH_MAX_DRAWERS = 50


def alerts_showing_insights(*, insight_ids: list[int]) -> tuple[list[int], list[Alert]]:
    """For stored insights: (ids of the alerts they were scored for: their feed rows change, the
    alerts whose drawer shows one of them: those, and the active alerts of an alert-less insight's
    entity that have no insight of their own). Two queries whatever the number of insights."""
    insights = list(
        Insight.objects.filter(pk__in=insight_ids).values_list("alert_id", "entity_type", "entity_id")
    )
    linked = sorted({a for a, _, _ in insights if a is not None})
    entities = Q()
    for entity_type, entity_id in sorted({(t, e) for a, t, e in insights if a is None}):
        entities |= Q(entity_type=entity_type, entity_id=entity_id)
    drawers = Q(pk__in=linked)
    if entities:
        drawers |= (
            entities
            & Q(status__in=ACTIVE_STATUSES)
            & ~Exists(Insight.objects.filter(alert_id=OuterRef("pk")))
        )
    if not linked and not entities:
        return [], []
    return linked, list(Alert.objects.filter(drawers).order_by("-last_seen")[:INSIGHT_PUSH_MAX_DRAWERS])


def insight_for_alert(alert: Alert) -> Insight | None:
    """The insight scored for this alert, else the latest one for its entity."""
    linked = Insight.objects.filter(alert_id=alert.pk).order_by("-scored_at").first()
    if linked is not None:
        return linked
    return (
        Insight.objects.filter(entity_type=alert.entity_type, entity_id=alert.entity_id)
        .order_by("-scored_at")
        .first()
    )


def health_components(components: dict[str, Any] | None) -> list[dict[str, Any]]:
    """A snapshot's score components as rows {name, score, weight, why, points}: the student health
    score's deductions (points off, largest first; score and weight None) or the tutor burnout
    components (score and weight, largest weight first)."""
    parts = {n: c for n, c in (components or {}).items() if isinstance(c, dict)}
    if parts and all("points" in c and "score" not in c for c in parts.values()):
        rows = [
            {
                "name": n.replace("_", " "),
                "score": None,
                "weight": None,
                "why": c.get("why", ""),
                "points": c["points"],
            }
            for n, c in parts.items()
        ]
        return sorted(rows, key=lambda r: -(r["points"] or 0))
    rows = []
    for name, c in parts.items():
        score, weight = c.get("score"), c.get("weight")
        points = (
            round(score * weight, 1)
            if isinstance(score, int | float) and isinstance(weight, int | float)
            else None
        )
        rows.append(
            {
                "name": name.replace("_", " "),
                "score": score,
                "weight": weight,
                "why": c.get("why", ""),
                "points": points,
            }
        )
    return sorted(rows, key=lambda r: -(r["weight"] or 0))


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


def alert_panel(*, alert_id: int) -> dict[str, Any] | None:
    alert = Alert.objects.select_related("acknowledged_by", "closed_by").filter(pk=alert_id).first()
    if alert is None:
        return None
    insight = insight_for_alert(alert)
    snapshot = None
    if alert.entity_type == "student":
        snapshot = StudentSnapshot.objects.filter(student_id=alert.entity_id).first()
    elif alert.entity_type == "tutor":
        snapshot = TutorSnapshot.objects.filter(tutor_id=alert.entity_id).first()
    components = {}
    if snapshot is not None:
        components = getattr(snapshot, "health_components", None) or getattr(
            snapshot, "burnout_components", None
        )
    silence = silences_for([alert], now=timezone.now()).get(alert.pk)
    alert.muted = silence is not None  # type: ignore[attr-defined]  # as with_muted annotates feed rows
    return {
        "alert": alert,
        "silence": silence,
        "transitions": list(alert.transitions.select_related("by").order_by("at", "id")),
        "insight": insight,
        "drivers_chart": drivers_chart(insight),
        "snapshot": snapshot,
        "components": health_components(components),
        "risk_threshold": thresholds.get("ALERT_LOW_HEALTH_WARNING"),
    }


# --- entity pages -----------------------------------------------------------------------------


def split_subject_region(entity_id: str) -> tuple[str, str]:
    return cell_parse(entity_id) or (entity_id, "")


def _days(now: datetime, days: int) -> list[datetime]:
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return [today - timedelta(days=days - 1 - i) for i in range(days)]


def _daily(qs: QuerySet, field: str, sums: dict[str, Any], days: list[datetime]) -> dict[str, list]:
    rows = {
        r["day"]: r
        for r in qs.filter(**{f"{field}__gte": days[0]})
        .annotate(day=TruncDay(field, tzinfo=UTC))
        .values("day")
        .annotate(**sums)
        .values("day", *sums)
    }
    return {k: [rows[d][k] if d in rows and rows[d][k] is not None else 0 for d in days] for k in sums}


def _daily_labels(series: list[dict[str, Any]]) -> list[str]:
    return [datetime.fromisoformat(p["date"]).strftime("%b %d") for p in series]


def student_history(*, student_id: str, now: datetime, days: int = HISTORY_DAYS) -> dict[str, Any]:
    series = entity_history(entity_type="student", entity_id=student_id, days=days, now=now)
    return {
        "type": "bar",
        "labels": _daily_labels(series),
        "datasets": [
            {"label": "sessions completed", "data": [p["sessions_completed"] for p in series], "color": "ok"},
            {"label": "unsuccessful", "data": [p["sessions_unsuccessful"] for p in series], "color": "crit"},
            {"label": "IB calls", "data": [p["ib_calls"] for p in series], "color": "warn"},
        ],
    }


def tutor_history(*, tutor_id: str, now: datetime, days: int = HISTORY_DAYS) -> dict[str, Any]:
    series = entity_history(entity_type="tutor", entity_id=tutor_id, days=days, now=now)
    return {
        "type": "bar",
        "labels": _daily_labels(series),
        "datasets": [
            {"label": "sessions taught", "data": [p["sessions_completed"] for p in series], "color": "ok"},
            {"label": "unsuccessful", "data": [p["sessions_unsuccessful"] for p in series], "color": "crit"},
            {"label": "hours taught", "data": [p["hours"] for p in series], "color": "info"},
        ],
    }


def subject_region_history(*, subject: str, region: str, now: datetime, days: int = HISTORY_DAYS) -> dict:
    day_list = _days(now, days)
    s = _daily(
        SupplyDemandReading.objects.filter(subject=subject, region=region),
        "reported_at",
        {"demand": Avg("demand_score"), "supply": Avg("supply_score")},
        day_list,
    )
    return {
        "type": "line",
        "labels": [d.strftime("%b %d") for d in day_list],
        "max": 100,
        "datasets": [
            {"label": "demand score", "data": [round(v, 1) for v in s["demand"]], "color": "crit"},
            {"label": "supply score", "data": [round(v, 1) for v in s["supply"]], "color": "ok"},
        ],
    }


def entity_page(*, entity_type: str, entity_id: str, now: datetime) -> dict[str, Any] | None:
    """Everything an entity page shows, or None when nothing is known about the entity."""
    snapshot: Any = None
    history: dict[str, Any] | None = None
    sessions: list[Session] = []
    components: list[dict[str, Any]] = []
    if entity_type == "student":
        snapshot = StudentSnapshot.objects.filter(student_id=entity_id).first()
        history = student_history(student_id=entity_id, now=now)
        sessions = list(Session.objects.filter(student_id=entity_id).order_by("-started_at", "-id")[:15])
        components = health_components(snapshot.health_components if snapshot else None)
    elif entity_type == "tutor":
        snapshot = TutorSnapshot.objects.filter(tutor_id=entity_id).first()
        history = tutor_history(tutor_id=entity_id, now=now)
        sessions = list(Session.objects.filter(tutor_id=entity_id).order_by("-started_at", "-id")[:15])
        components = health_components(snapshot.burnout_components if snapshot else None)
    elif entity_type == "subject_region":
        subject, region = split_subject_region(entity_id)
        snapshot = SubjectRegionSnapshot.objects.filter(subject=subject, region=region).first()
        history = subject_region_history(subject=subject, region=region, now=now)
    elif entity_type != "global":
        return None
    alerts = list(
        with_insight_risk(
            with_muted(Alert.objects.filter(entity_type=entity_type, entity_id=entity_id), now=now)
        ).order_by("-last_seen")[:50]
    )
    insights = list(  # copies (a cached insight answering another alert) are not new scorings
        Insight.objects.filter(
            entity_type=entity_type, entity_id=entity_id, cached_from__isnull=True
        ).order_by("-scored_at")[:10]
    )
    if snapshot is None and not alerts and not insights and not sessions:
        return None
    insight = current_insight(
        entity_type=entity_type, snapshot=snapshot, latest=insights[0] if insights else None
    )
    return {
        "entity_type": entity_type,
        "entity_id": entity_id,
        "snapshot": snapshot,
        "history": history,
        "sessions": sessions,
        "components": components,
        "risk_threshold": thresholds.get("ALERT_LOW_HEALTH_WARNING"),
        "alerts": alerts,
        "insight": insight,
        "insights": [i for i in insights if insight is None or i.pk != insight.pk],
        "drivers_chart": drivers_chart(insight),
    }


def entity_search(*, query: str, limit: int = 20) -> list[tuple[str, str]]:
    """(entity_type, entity_id) matches: an exact id alone; otherwise ids containing the text and
    subject × region cells whose subject or region contains it, case-insensitive ("math" finds the
    Mathematics cells, "stu_12" stu_12, stu_120, …). Each kind is capped at `limit` rows, in id order."""
    q = query.strip()
    if not q:
        return []
    found: list[tuple[str, str]] = []
    for model, key, etype in (
        (StudentSnapshot, "student_id", "student"),
        (TutorSnapshot, "tutor_id", "tutor"),
    ):
        exact = model.objects.filter(**{key: q}).values_list(key, flat=True)[:1]
        found += [(etype, i) for i in exact]
    if found:
        return found
    for model, key, etype in (
        (StudentSnapshot, "student_id", "student"),
        (TutorSnapshot, "tutor_id", "tutor"),
    ):
        found += [
            (etype, i)
            for i in model.objects.filter(**{f"{key}__icontains": q})
            .order_by(key)
            .values_list(key, flat=True)[:limit]
        ]
    subject, region = split_subject_region(q)
    places = SubjectRegionSnapshot.objects.filter(Q(subject__icontains=q) | Q(region__icontains=q))
    if region:
        places = SubjectRegionSnapshot.objects.filter(subject__icontains=subject, region__icontains=region)
    found += [
        ("subject_region", f"{s}|{r}")
        for s, r in places.order_by("subject", "region").values_list("subject", "region")[:limit]
    ]
    return found[: limit * 2]


def students_at_risk_ids(*, now: datetime, range_key: str = DEFAULT_RANGE) -> list[str]:
    """The students the at-risk KPI counts for this range (bench/signal_quality.py scores this set)."""
    since = now - RANGES[parse_range(range_key)]
    return list(
        students_at_risk(since=since, below=thresholds.get("ALERT_LOW_HEALTH_WARNING")).values_list(
            "student_id", flat=True
        )
    )
