"""Feature vectors for the churn (student) and burnout (tutor) models, read from metrics snapshots.

Every feature is a plain float with a fixed meaning, so the local model, the Bedrock prompt, the
cache's "moved materially" test and the stored Insight.features all see the same numbers.
"""

from __future__ import annotations

from metrics.models import StudentSnapshot, TutorSnapshot

ENTITY_TYPES = ("student", "tutor")
# A student with no session at all counts as this many days idle (two weeks: worrying, not maximal).
NEVER_SESSION_DAYS = 14.0
DAYS_CAP = 30.0
IB_CAP = 6.0  # the prototype's baseline caps IB calls at 6 (5 points each, 30 at most)


def student_features(snap: StudentSnapshot) -> dict[str, float]:
    """The churn features. `health` is the platform's reported score when there is one (what the
    prototype scored on and what the low-health alert fires on), else our own."""
    health = snap.platform_health_score if snap.platform_health_score is not None else snap.health_score
    if snap.velocity is not None and snap.prior_weekly_mean >= 1:
        velocity_drop = max(0.0, 1.0 - min(float(snap.velocity), 1.0))
    else:
        velocity_drop = 0.0
    days = snap.days_since_last_session
    reasons = snap.ib_reasons_14d or {}
    return {
        "health_gap": round(100.0 - (70.0 if health is None else float(health)), 3),
        "ib_calls_14d": min(float(snap.ib_calls_14d), IB_CAP),
        "ib_unresolved_14d": float(snap.ib_unresolved_14d),
        "ib_high_priority_14d": float(snap.ib_high_priority_14d),
        "ib_tutor_or_technical_14d": float(
            int(reasons.get("tutor_concern", 0)) + int(reasons.get("technical_problem", 0))
        ),
        "sessions_7d": float(snap.sessions_7d),
        "sessions_30d": float(snap.sessions_30d),
        "velocity_drop": round(velocity_drop, 3),
        "days_since_last_session": round(
            NEVER_SESSION_DAYS if days is None else min(float(days), DAYS_CAP), 2
        ),
        "first_session_failed": 1.0 if snap.first_session_ok is False else 0.0,
        "rating_gap": round(1.0 if snap.avg_rating_given is None else 5.0 - float(snap.avg_rating_given), 3),
        "unsuccessful_30d": float(snap.unsuccessful_30d),
    }


def tutor_features(snap: TutorSnapshot) -> dict[str, float]:
    """The burnout features: load, volume against the tutor's own usual week, and quality sliding."""
    utilisation = 0.0 if snap.utilisation is None else min(float(snap.utilisation), 1.5)
    load_ratio = snap.sessions_7d / snap.prior_weekly_mean if snap.prior_weekly_mean >= 1 else 1.0
    if snap.avg_rating_7d is not None and snap.avg_rating_prior is not None:
        rating_drop = max(0.0, float(snap.avg_rating_prior) - float(snap.avg_rating_7d))
    else:
        rating_drop = 0.0
    return {
        "utilisation": round(utilisation, 3),
        "hours_taught_7d": round(float(snap.hours_taught_7d), 2),
        "load_ratio": round(min(load_ratio, 3.0), 3),
        "rating_gap": round(0.5 if snap.avg_rating is None else 5.0 - float(snap.avg_rating), 3),
        "rating_drop": round(rating_drop, 3),
        "incompletion": round(0.0 if snap.completion_rate is None else 1.0 - float(snap.completion_rate), 3),
    }
