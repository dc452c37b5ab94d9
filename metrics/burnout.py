"""Tutor burnout risk (0–1): three explainable components, documented in docs/metrics-and-alerts.md."""

from __future__ import annotations

BURNOUT_WEIGHTS = {"load": 0.5, "rating_slide": 0.3, "volume_surge": 0.2}
MIN_RATED_RECENT = 2  # rated sessions in the last 7 days before a rating slide counts
MIN_RATED_PRIOR = 3  # rated sessions in days 8–30 to compare against


def _clamp01(value: float) -> float:
    return max(0.0, min(1.0, value))


def burnout_components(
    *,
    utilisation: float | None,
    avg_rating_7d: float | None,
    rated_7d: int,
    avg_rating_prior: float | None,
    rated_prior: int,
    sessions_7d: int,
    prior_weekly_mean: float,
) -> dict[str, dict[str, float | str]]:
    if utilisation is None:
        load, load_why = 0.0, "no availability reported"
    else:
        # 60 % of the hours a tutor offers is comfortable; 100 % or more is full load.
        load = _clamp01((utilisation - 0.6) / 0.4)
        load_why = f"teaching {utilisation:.0%} of available hours"
    if (
        avg_rating_7d is not None
        and avg_rating_prior is not None
        and rated_7d >= MIN_RATED_RECENT
        and rated_prior >= MIN_RATED_PRIOR
    ):
        drop = avg_rating_prior - avg_rating_7d
        slide = _clamp01(drop)  # a full star lower than before = 1
        slide_why = f"rated {avg_rating_7d:.1f} this week vs. {avg_rating_prior:.1f} before"
    else:
        slide, slide_why = 0.0, "too few rated sessions to compare"
    if prior_weekly_mean >= 1:
        surge = _clamp01(sessions_7d / prior_weekly_mean - 1)  # twice the usual weekly sessions = 1
        surge_why = f"{sessions_7d} sessions this week vs. a usual {prior_weekly_mean:.1f}"
    else:
        surge, surge_why = 0.0, "no 3-week baseline yet"
    scores = {
        "load": (load, load_why),
        "rating_slide": (slide, slide_why),
        "volume_surge": (surge, surge_why),
    }
    return {
        name: {"score": round(score, 3), "weight": BURNOUT_WEIGHTS[name], "why": why}
        for name, (score, why) in scores.items()
    }


def burnout_risk(components: dict[str, dict[str, float | str]]) -> float:
    return round(sum(float(c["score"]) * float(c["weight"]) for c in components.values()), 3)


def burnout_level(risk: float | None) -> str:
    if risk is None:
        return ""
    return "high" if risk >= 0.6 else "medium" if risk >= 0.3 else "low"
