"""Feature vectors for the churn (student) and burnout (tutor) models, read from metrics snapshots.

Every feature has a fixed meaning (a number, None when unknown, or a component's reason text), so the
local model, the Bedrock prompt, the cache's "unchanged" test and the stored Insight.features all see
the same figures — the ones the entity page shows.
"""

from __future__ import annotations

from typing import Any

from metrics.health import COMPONENTS as HEALTH_COMPONENTS
from metrics.models import StudentSnapshot, TutorSnapshot

ENTITY_TYPES = ("student", "tutor")
# The snapshot columns each feature function reads (insights.services reads only these).
FEATURE_COLUMNS = {
    "student": (
        "health_score",
        "health_components",
        "platform_health_score",
        "platform_health_baseline",
        "sessions_7d",
        "prior_weekly_mean",
        "days_since_last_session",
        "ib_calls_7d",
        "ib_calls_14d",
    ),
    "tutor": (
        "utilisation",
        "hours_taught_7d",
        "sessions_7d",
        "prior_weekly_mean",
        "avg_rating_7d",
        "avg_rating_prior",
        "avg_rating",
        "completion_rate",
    ),
}


def student_features(snap: StudentSnapshot | Any) -> dict[str, Any]:
    """The churn insight's inputs: our health score (None: not enough data yet, no insight), the points
    each component took off and its reason, and the figures those reasons quote. Nothing is filled in:
    an unknown figure stays None."""
    components = snap.health_components or {}
    features: dict[str, Any] = {"health": snap.health_score}
    for name in HEALTH_COMPONENTS:
        component = components.get(name) or {}
        features[name] = round(float(component.get("points") or 0.0), 1)
        features[f"{name}_why"] = str(component.get("why") or "")
    features.update(
        platform_health=snap.platform_health_score,
        platform_baseline=snap.platform_health_baseline,
        sessions_7d=snap.sessions_7d,
        prior_weekly_mean=snap.prior_weekly_mean,
        days_since_last_session=snap.days_since_last_session,
        ib_calls_7d=snap.ib_calls_7d,
        ib_calls_14d=snap.ib_calls_14d,
    )
    return features


def tutor_features(snap: TutorSnapshot | Any) -> dict[str, Any]:
    """The burnout features: load, volume against the tutor's own usual week, and quality sliding."""
    # Unknown stays unknown (None): no availability reported means no utilisation, not 0 %.
    utilisation = None if snap.utilisation is None else min(float(snap.utilisation), 1.5)
    load_ratio = snap.sessions_7d / snap.prior_weekly_mean if snap.prior_weekly_mean >= 1 else 1.0
    if snap.avg_rating_7d is not None and snap.avg_rating_prior is not None:
        rating_drop = max(0.0, float(snap.avg_rating_prior) - float(snap.avg_rating_7d))
    else:
        rating_drop = 0.0
    return {
        "utilisation": None if utilisation is None else round(utilisation, 3),
        "hours_taught_7d": round(float(snap.hours_taught_7d), 2),
        "load_ratio": round(min(load_ratio, 3.0), 3),
        "rating_gap": None if snap.avg_rating is None else round(5.0 - float(snap.avg_rating), 3),
        "rating_drop": round(rating_drop, 3),
        "incompletion": None if snap.completion_rate is None else round(1.0 - float(snap.completion_rate), 3),
    }
