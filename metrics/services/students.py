"""Student snapshots recomputed from window sums over hour buckets, the first/last-session facts and
the platform's latest reading: activity, velocity, the health score and its evidence."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any, NamedTuple

from django.conf import settings
from django.db.models import Max

from iops.lib.jsontext import json_text
from metrics.health import Assessment
from metrics.health import Evidence as HealthEvidence
from metrics.health import assess as health_assess
from metrics.models import Session, StudentHourly, StudentSessionFacts, StudentSnapshot
from metrics.selectors import data_coverage_start
from metrics.services.columns import (
    IB_REASON_WINDOWS,
    STUDENT_REFRESH_FIELDS,
    STUDENT_TABLE,
    STUDENT_WINDOWS,
)
from metrics.services.db import Windows, chunks, rows_by_id, window_sums
from metrics.windows import window_start

_SUMS = Windows(STUDENT_WINDOWS, first_hour=True)


# The columns read of the student's StudentSessionFacts row, and of what its snapshot shows now (its
# first session and the platform's latest reading).
_FACTS = ("first_completed_at", "first_session_id", "first_ok", "last_completed_at")
_SHOWN = (
    "first_session_at",
    "first_session_id",
    "first_session_ok",
    "platform_health_score",
    "platform_churn_risk",
    "platform_reported_at",
)
_NOT_SHOWN = {**dict.fromkeys(_SHOWN), "first_session_id": "", "platform_churn_risk": ""}


class _First(NamedTuple):
    at: datetime | None
    session_id: str
    ok: bool | None


class _Reads(NamedTuple):
    """Everything a chunk of students' refresh reads, by student id."""

    sums: dict[str, dict[str, Any]]
    facts: dict[str, dict[str, Any]]  # _FACTS
    shown: dict[str, dict[str, Any]]  # _SHOWN
    last_until_now: dict[str, datetime]


def velocity_trend(velocity: float | None, prior_weekly_mean: float, sessions_7d: int) -> str:
    if prior_weekly_mean <= 0:
        return "new" if sessions_7d > 0 else ""
    if velocity is None:
        return ""
    if velocity >= 1.25:
        return "rising"
    if velocity <= 0.75:
        return "falling"
    return "steady"


class _FirstSessionJudge:
    """Only a session after a full look-back of our own data is known to be a student's first.
    The coverage is read once, and only for a student whose first session went badly."""

    def __init__(self) -> None:
        self.lookback = timedelta(days=settings.FIRST_SESSION_LOOKBACK_DAYS)
        # Read once per refresh, not per student (a settings read is a lazy-object lookup).
        self.min_history_days = settings.HEALTH_MIN_HISTORY_DAYS
        self._coverage: list[datetime | None] = []

    def known(self, first: _First) -> bool:
        if first.at is None or first.ok is not False:
            return False
        if not self._coverage:
            self._coverage.append(data_coverage_start())
        start = self._coverage[0]
        return bool(start and first.at >= start + self.lookback)


def refresh_students(ids: list[str], now: datetime) -> dict[str, SimpleNamespace]:
    """Recompute these students' snapshots as of `now`; returns each one's alert-rule inputs."""
    views: dict[str, SimpleNamespace] = {}
    judge = _FirstSessionJudge()
    for chunk in chunks(ids):
        reads = _read(chunk, now)
        rows = []
        for sid in chunk:
            row, view = _student(sid, reads, now, judge)
            rows.append(row)
            views[sid] = view
        STUDENT_TABLE.upsert(rows, now, columns=STUDENT_REFRESH_FIELDS)
    return views


def _read(chunk: Sequence[str], now: datetime) -> _Reads:
    sums = window_sums(StudentHourly, "student_id", chunk, _SUMS, now)
    facts = rows_by_id(StudentSessionFacts, "student_id", chunk, _FACTS)
    shown = rows_by_id(StudentSnapshot, "student_id", chunk, _SHOWN)
    # A completion stamped after `now` (clock skew) is not shown yet: the latest one up to now.
    ahead = sorted(
        sid for sid, f in facts.items() if f["last_completed_at"] is not None and f["last_completed_at"] > now
    )
    last_until_now = (
        dict(
            Session.objects.filter(student_id__in=ahead, completed_at__lte=now)
            .values("student_id")
            .annotate(last=Max("completed_at"))
            .values_list("student_id", "last")
        )
        if ahead
        else {}
    )
    return _Reads(sums, facts, shown, last_until_now)


def _last_session(sid: str, reads: _Reads, now: datetime) -> datetime | None:
    f = reads.facts.get(sid)
    if f is None:
        return None
    if f["last_completed_at"] is None or f["last_completed_at"] <= now:
        return f["last_completed_at"]
    return reads.last_until_now.get(sid)


def _first_session(f: dict[str, Any] | None, shown: dict[str, Any], now: datetime) -> _First:
    if f is not None and f["first_completed_at"] is not None and f["first_completed_at"] <= now:
        return _First(f["first_completed_at"], f["first_session_id"], f["first_ok"])
    # No completed session up to now: keep what the snapshot shows.
    return _First(shown["first_session_at"], shown["first_session_id"], shown["first_session_ok"])


def _student(
    sid: str, reads: _Reads, now: datetime, judge: _FirstSessionJudge
) -> tuple[dict[str, Any], SimpleNamespace]:
    """One student's snapshot row (the refreshed columns, JSON as text) and its rule inputs (the same
    values, JSON as objects, and the platform's latest reading)."""
    w = reads.sums.get(sid) or _SUMS.empty
    shown = reads.shown.get(sid, _NOT_SHOWN)
    rated = w["rating_count_30d"]
    prior = (w["sessions_28d"] - w["sessions_7d"]) / 3
    velocity = round(w["sessions_7d"] / prior, 3) if prior > 0 else None
    last = _last_session(sid, reads, now)
    first = _first_session(reads.facts.get(sid), shown, now)
    reasons = {r: w[name] for r, name in IB_REASON_WINDOWS.items() if w[name]}
    values = {
        "sessions_7d": w["sessions_7d"],
        "sessions_14d": w["sessions_14d"],
        "sessions_30d": w["sessions_30d"],
        "sessions_started_7d": w["sessions_started_7d"],
        "sessions_started_30d": w["sessions_started_30d"],
        "unsuccessful_30d": w["unsuccessful_30d"],
        "ib_calls_7d": w["ib_calls_7d"],
        "ib_calls_14d": w["ib_calls_14d"],
        "ib_calls_30d": w["ib_calls_30d"],
        "ib_unresolved_14d": w["ib_unresolved_14d"],
        "ib_high_priority_14d": w["ib_high_priority_14d"],
        "ib_reasons_14d": json_text(reasons),  # JSON as text: the row holds plain values only
        "rated_sessions_30d": rated,
        "avg_rating_given": round(w["rating_sum_30d"] / rated, 2) if rated else None,
        "prior_weekly_mean": round(prior, 3),
        "velocity": velocity,
        "velocity_trend": velocity_trend(velocity, prior, w["sessions_7d"]),
        "last_session_at": last,
        "days_since_last_session": round((now - last).total_seconds() / 86400, 2) if last else None,
        "first_session_at": first.at,
        "first_session_id": first.session_id,
        "first_session_ok": first.ok,
        "platform_health_baseline": _platform_baseline(
            w, shown["platform_health_score"], shown["platform_reported_at"], now
        ),
        "observed_since": w["first_hour"],
        "health_components": None,
        "health_score": None,
        "as_of": now,
        "updated_at": now,
    }
    assessment = _assess(
        w, values, prior, judge.known(first), shown["platform_health_score"], now, judge.min_history_days
    )
    values["health_components"] = json_text(assessment.components)
    values["health_score"] = assessment.score
    view = SimpleNamespace(**values)
    view.student_id = sid
    view.ib_reasons_14d, view.health_components = reasons, assessment.components
    view.platform_health_score = shown["platform_health_score"]
    view.platform_churn_risk = shown["platform_churn_risk"]
    values["student_id"] = sid
    return values, view


def _assess(
    w: dict[str, Any],
    values: dict[str, Any],
    prior: float,
    first_known: bool,
    platform_health: float | None,
    now: datetime,
    min_history_days: int,
) -> Assessment:
    """The health score from the window sums and the snapshot values computed so far."""
    observed_since, first_at = w["first_hour"], values["first_session_at"]
    return health_assess(
        HealthEvidence(
            observed_days=(now - observed_since).total_seconds() / 86400 if observed_since else None,
            sessions_7d=w["sessions_7d"],
            prior_weekly_mean=prior,
            days_since_last_session=values["days_since_last_session"],
            ib_calls_7d=w["ib_calls_7d"],
            ib_calls_30d=w["ib_calls_30d"],
            ib_unresolved_14d=w["ib_unresolved_14d"],
            ib_high_priority_14d=w["ib_high_priority_14d"],
            avg_rating_given=values["avg_rating_given"],
            rated_sessions_30d=values["rated_sessions_30d"],
            unsuccessful_30d=w["unsuccessful_30d"],
            first_session_ok=values["first_session_ok"],
            first_session_known=first_known,
            days_since_first_session=(now - first_at).total_seconds() / 86400 if first_at else None,
            platform_health=platform_health,
            platform_baseline=values["platform_health_baseline"],
        ),
        min_history_days=min_history_days,
    )


def _platform_baseline(
    w: dict[str, Any], latest: float | None, latest_at: datetime | None, now: datetime
) -> float | None:
    """Mean of the student's platform readings from 8 to 30 days ago (the latest one left out): what
    the platform usually said of them, before whatever is happening this week."""
    hundredths = int(w["health_sum_30d"]) - int(w["health_sum_7d"])
    count = int(w["health_count_30d"]) - int(w["health_count_7d"])
    if (
        latest is not None
        and latest_at is not None
        and window_start(now, 30) <= latest_at < window_start(now, 7)
    ):
        hundredths, count = hundredths - round(latest * 100), count - 1
    return round(hundredths / count / 100, 1) if count > 0 else None
