"""Our own student health score (0–100): five explainable components, documented in ARCHITECTURE.md."""

from __future__ import annotations

WEIGHTS = {"engagement": 0.30, "support": 0.20, "satisfaction": 0.20, "first_session": 0.10, "recency": 0.20}


def _clamp(value: float) -> float:
    return max(0.0, min(100.0, value))


def health_components(
    *,
    sessions_7d: int,
    sessions_30d: int,
    prior_weekly_mean: float,
    ib_calls_14d: int,
    ib_unresolved_14d: int,
    ib_high_priority_14d: int,
    avg_rating_given: float | None,
    first_session_ok: bool | None,
    days_since_last_session: float | None,
) -> dict[str, dict[str, float | str]]:
    if prior_weekly_mean >= 1:
        engagement = 100 * min(1.0, sessions_7d / prior_weekly_mean)
        why = f"{sessions_7d} sessions this week vs. a usual {prior_weekly_mean:.1f}"
    elif sessions_30d > 0:
        engagement = 100 * min(1.0, float(sessions_7d))
        why = f"{sessions_7d} sessions this week (no 3-week baseline yet)"
    else:
        engagement, why = 50.0, "no sessions in 30 days"
    support = _clamp(100 - 20 * ib_calls_14d - 10 * ib_unresolved_14d - 10 * ib_high_priority_14d)
    satisfaction = 70.0 if avg_rating_given is None else _clamp((avg_rating_given - 1) / 4 * 100)
    first = {True: 100.0, False: 20.0, None: 60.0}[first_session_ok]
    if days_since_last_session is None:
        recency = 50.0
    elif days_since_last_session <= 7:
        recency = 100.0
    else:
        recency = _clamp(100 * (30 - days_since_last_session) / 23)
    scores = {
        "engagement": (engagement, why),
        "support": (
            support,
            f"{ib_calls_14d} support calls in 14 days ({ib_unresolved_14d} unresolved, {ib_high_priority_14d} high priority)",
        ),
        "satisfaction": (
            satisfaction,
            "no ratings yet" if avg_rating_given is None else f"rates sessions {avg_rating_given:.1f}/5",
        ),
        "first_session": (
            first,
            {True: "first session succeeded", False: "first session failed", None: "no first session yet"}[
                first_session_ok
            ],
        ),
        "recency": (
            recency,
            "never had a session"
            if days_since_last_session is None
            else f"last session {days_since_last_session:.1f} days ago",
        ),
    }
    return {
        name: {"score": round(score, 1), "weight": WEIGHTS[name], "why": why}
        for name, (score, why) in scores.items()
    }


def health_score(components: dict[str, dict[str, float | str]]) -> float:
    return round(sum(float(c["score"]) * float(c["weight"]) for c in components.values()), 1)
