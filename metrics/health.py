"""Our student health score — the one definition of risk in IOps.

health = max(0, 100 − the points each piece of evidence takes off). Evidence is judged against the
student's own history (their usual sessions and calls, the platform's earlier readings of them), so a
student who has always booked little or called often is not "at risk" for being themselves; a change is.

    at risk      health < ALERT_LOW_HEALTH_WARNING (70)   → low_health_score warning
    critical     health < ALERT_LOW_HEALTH_CRITICAL (50)  → low_health_score critical
    not enough data yet: watched for less than HEALTH_MIN_HISTORY_DAYS and no failed first session → no score

The platform's own reading is one input (its drop below the student's earlier readings, and its level),
shown beside our score, never a second alert source. The KPI card, the student list, the alert and the
insight all read this score; the insight's churn probability is `churn_probability(health)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Each component's largest deduction: no single kind of evidence can take the score to 0 on its own.
CAPS = {
    "platform": 60.0,
    "support": 35.0,
    "engagement": 25.0,
    "recency": 30.0,
    "satisfaction": 25.0,
    "first_session": 35.0,
}
# Calls a student makes when we know nothing of them: one per 14 days, weighing as 14 days of history.
PRIOR_CALLS, PRIOR_DAYS = 1.0, 14.0
FIRST_SESSION_FADE_DAYS = 30.0  # a failed first session weighs less as the student books on
# Churn probability from health (logistic): 0.22 at 70, 0.5 at 60, 0.78 at 50 (bench/signal_quality.py checks it).
CHURN_MIDPOINT, CHURN_SCALE = 60.0, 8.0


@dataclass(frozen=True)
class Evidence:
    observed_days: float | None  # days since the first activity we have (None: none)
    sessions_7d: int
    prior_weekly_mean: float  # sessions per week over days 8–28
    days_since_last_session: float | None
    ib_calls_7d: int
    ib_calls_30d: int
    ib_unresolved_14d: int
    ib_high_priority_14d: int
    avg_rating_given: float | None
    rated_sessions_30d: int
    unsuccessful_30d: int
    first_session_ok: bool | None
    first_session_known: bool  # watched long enough before it to know it was their first
    days_since_first_session: float | None
    platform_health: float | None
    platform_baseline: float | None


@dataclass(frozen=True)
class Assessment:
    score: float | None  # None: not enough data yet
    components: dict[str, dict[str, float | str]]


def _n(value: float, one: str, many: str | None = None) -> str:
    """ "1 session", "2 sessions", "1.5 sessions"."""
    shown = f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
    return f"{shown} {one if value == 1 else (many or one + 's')}"


def poisson_cdf(k: int, lam: float) -> float:
    """P(X ≤ k) for a Poisson count of mean `lam` (how unlikely so few events are at a usual pace)."""
    term = total = math.exp(-lam)
    for i in range(1, k + 1):
        term *= lam / i
        total += term
    return min(1.0, total)


def _platform(e: Evidence) -> tuple[float, str]:
    h = e.platform_health
    if h is None:
        return 0.0, "no platform reading"
    level = max(0.0, 55.0 - h)
    if e.platform_baseline is None:
        return min(CAPS["platform"], level), f"platform reads {h:.0f} (no earlier reading to compare)"
    drop = e.platform_baseline - h
    points = level + 1.6 * max(0.0, drop - 6.0)
    return min(CAPS["platform"], points), f"platform reads {h:.0f} (usually {e.platform_baseline:.0f})"


def _support(e: Evidence) -> tuple[float, str]:
    earlier = max(0, e.ib_calls_30d - e.ib_calls_7d)  # days 8–30
    expected = 7 * (earlier + PRIOR_CALLS) / (23 + PRIOR_DAYS)
    points = 7 * max(0.0, e.ib_calls_7d - expected - 1) + 2 * e.ib_unresolved_14d + 2 * e.ib_high_priority_14d
    why = (
        f"{_n(e.ib_calls_7d, 'support call')} this week (usually {expected:.1f}); "
        f"{e.ib_unresolved_14d} unresolved and {e.ib_high_priority_14d} high priority in 14 days"
    )
    return min(CAPS["support"], points), why


def _engagement(e: Evidence) -> tuple[float, str]:
    prior = e.prior_weekly_mean
    if prior < 1:
        return 0.0, "no usual weekly pace yet (fewer than 3 sessions in the 3 weeks before this one)"
    surprise = -math.log10(max(poisson_cdf(e.sessions_7d, prior), 1e-12))
    points = 8 * max(0.0, surprise - 0.5)
    return min(CAPS["engagement"], points), f"{_n(e.sessions_7d, 'session')} this week (usually {prior:.1f})"


def _recency(e: Evidence) -> tuple[float, str]:
    days = e.days_since_last_session
    if days is None:
        return 0.0, "no completed session yet"
    prior = e.prior_weekly_mean
    if prior < 0.5:
        return 0.0, f"last session {days:.1f} days ago (no usual pace to compare)"
    surprise = prior / 7 * days * math.log10(math.e)  # −log10 P(no session for `days` at the usual pace)
    points = 6 * max(0.0, surprise - 1)
    return min(CAPS["recency"], points), f"last session {days:.1f} days ago (usually every {7 / prior:.1f})"


def _satisfaction(e: Evidence) -> tuple[float, str]:
    points = 4.0 * max(0, e.unsuccessful_30d - 1)
    if e.avg_rating_given is not None and e.rated_sessions_30d >= 2:
        points += 8 * max(0.0, 3.5 - e.avg_rating_given)
        rated = f"rates sessions {e.avg_rating_given:.1f}/5"
    else:
        rated = "too few ratings"
    why = f"{rated}; {_n(e.unsuccessful_30d, 'unsuccessful session')} in 30 days"
    return min(CAPS["satisfaction"], points), why


def _first_session(e: Evidence) -> tuple[float, str]:
    if e.first_session_ok is None:
        return 0.0, "no completed session yet"
    if e.first_session_ok:
        return 0.0, "first session went well"
    if not e.first_session_known:
        return 0.0, "earliest session we saw went badly (not known to be their first)"
    age = e.days_since_first_session or 0.0
    weight = max(0.0, 1 - age / FIRST_SESSION_FADE_DAYS)
    return CAPS["first_session"] * weight, f"first session went badly {age:.1f} days ago"


COMPONENTS = {
    "platform": _platform,
    "support": _support,
    "engagement": _engagement,
    "recency": _recency,
    "satisfaction": _satisfaction,
    "first_session": _first_session,
}


def assess(evidence: Evidence, *, min_history_days: float) -> Assessment:
    """The score and each component's deduction with its reason (stored on the snapshot: the dashboard
    and the insight explain the score with them)."""
    components: dict[str, dict[str, float | str]] = {}
    for name, judge in COMPONENTS.items():
        points, why = judge(evidence)
        components[name] = {"points": round(points, 1), "why": why}
    observed = evidence.observed_days
    if (observed is None or observed < min_history_days) and not components["first_session"]["points"]:
        return Assessment(None, components)  # not enough data yet
    lost = sum(float(c["points"]) for c in components.values())
    return Assessment(round(max(0.0, 100.0 - lost), 1), components)


def churn_probability(health: float) -> float:
    """The chance the student stops booking, from the health score (the insight's risk)."""
    return round(1 / (1 + math.exp(-(CHURN_MIDPOINT - health) / CHURN_SCALE)), 3)
