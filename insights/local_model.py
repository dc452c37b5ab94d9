"""The local, explainable risk models. Deterministic: same features, same text.

Students: the health score is the model (metrics/health.py, the one definition of risk). The insight's
risk is `churn_probability(health)`, its level the alert's thresholds (high below 50, medium below 70),
its drivers the points each piece of evidence took off, its text their reasons (the figures the entity
page shows), its actions scaled to the level.

Tutors (burnout): a logistic model over standardised features, risk = σ(b + Σ wᵢ·(xᵢ − μᵢ)/sᵢ); each
term is that feature's contribution in log-odds (the drivers, the explanation's sentences, the
actions). An unknown feature (None) sits at its centre and is never cited.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from metrics.health import COMPONENTS as HEALTH_COMPONENTS
from metrics.health import churn_probability

LEVEL_HIGH = 0.7
LEVEL_MEDIUM = 0.4
MAX_DRIVERS = 5
EXPLANATION_MAX = 400


@dataclass(frozen=True)
class Term:
    feature: str
    centre: float
    scale: float
    weight: float
    says: Callable[[float], str]  # the phrase for the explanation when it raises risk
    action: str  # the recommended action when it raises risk ({v} is the value)


@dataclass(frozen=True)
class Spec:
    name: str
    noun: str  # "churn" | "burnout"
    intercept: float
    terms: tuple[Term, ...]
    calm_actions: tuple[str, ...]  # recommendations when nothing raises risk
    calm_text: str  # the explanation's tail when nothing raises risk


def _n(v: float) -> str:
    return f"{v:.0f}" if float(v).is_integer() else f"{v:.1f}"


TUTOR = Spec(
    name="local:burnout-logit-v1",
    noun="burnout",
    intercept=-1.2,
    terms=(
        Term(
            "utilisation",
            0.6,
            0.25,
            1.2,
            lambda v: f"teaching {v:.0%} of available hours",
            "Cap new bookings for this tutor this week and route instant-book requests elsewhere",
        ),
        Term(
            "hours_taught_7d",
            12,
            8,
            0.4,
            lambda v: f"{_n(v)} hour{'' if v == 1 else 's'} taught this week",
            "Schedule a day off in the next 7 days",
        ),
        Term(
            "load_ratio",
            1,
            0.4,
            0.5,
            lambda v: f"{v:.1f}× their usual weekly sessions",
            "Move some upcoming sessions to tutors with spare capacity in the same subject",
        ),
        Term(
            "rating_gap",
            0.6,
            0.5,
            0.6,
            lambda v: f"average rating {5 - v:.1f}/5",
            "Have a tutor lead review recent sessions and share feedback",
        ),
        Term(
            "rating_drop",
            0,
            0.4,
            0.7,
            lambda v: f"ratings down {v:.1f} stars vs. before",
            "Check in with the tutor about workload and wellbeing this week",
        ),
        Term(
            "incompletion",
            0.05,
            0.1,
            0.4,
            lambda v: f"{v:.0%} of sessions not completed",
            "Look into the incomplete sessions with the tutor",
        ),
    ),
    calm_actions=(
        "No intervention needed; keep the current availability",
        "Recognise the tutor's steady ratings in the next check-in",
    ),
    calm_text="load, weekly volume and ratings all look normal",
)

SPECS = {"tutor": TUTOR}


@dataclass
class Score:
    risk: float
    level: str
    explanation: str
    recommendations: list[str]
    drivers: list[dict[str, Any]]
    model: str
    features: dict[str, float] = field(default_factory=dict)


def level_for(risk: float) -> str:
    return "high" if risk >= LEVEL_HIGH else "medium" if risk >= LEVEL_MEDIUM else "low"


# --- students: the health score is the model (metrics/health.py) -----------------------------------

STUDENT_MODEL = "local:health-v2"
# What to do about each kind of evidence, by level: light touches for "medium", people for "high".
STUDENT_ACTIONS = {
    "platform": (
        "Send a personal check-in asking how their sessions are going",
        "Have the account manager call within 24 hours to review goals and progress",
    ),
    "support": (
        "Have support follow up on their recent calls this week",
        "Assign one support owner to close their open tickets and call them back today",
    ),
    "engagement": (
        "Suggest a fixed weekly slot with their usual tutor",
        "Offer a free make-up session this week to restart the routine",
    ),
    "recency": (
        "Send a reminder with their tutor's next open slots",
        "Reach out personally and book the next session with them",
    ),
    "satisfaction": (
        "Ask for feedback on their recent sessions",
        "Offer a different tutor and a free replacement session",
    ),
    "first_session": (
        "Offer a free second first session with a top-rated tutor",
        "Call them today and book a free second first session with a top-rated tutor",
    ),
}
STUDENT_CALM = (
    "No intervention needed; keep the current routine",
    "Invite a rating after the next session to keep the signal fresh",
)
STUDENT_FIGURES = (
    "platform_health",
    "platform_baseline",
    "sessions_7d",
    "prior_weekly_mean",
    "days_since_last_session",
    "ib_calls_7d",
    "ib_calls_14d",
)


def student_level(health: float, cuts: tuple[float, float] | None = None) -> str:
    """The level of a health score, on the same thresholds as the alert and the at-risk KPI: `cuts` is
    (critical, warning) at runtime (alerts.thresholds, passed by the services); the environment's
    values when absent, so the model stays a pure function."""
    from django.conf import settings

    critical, warning = cuts or (settings.ALERT_LOW_HEALTH_CRITICAL, settings.ALERT_LOW_HEALTH_WARNING)
    if health < critical:
        return "high"
    return "medium" if health < warning else "low"


def _raising(entity_type: str, drivers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The drivers that raise the risk, in the drivers' order: what an explanation and its actions cite
    (a student's deductions of at least a point; a tutor's log-odds above 0.1)."""
    if entity_type == "student":
        return [d for d in drivers if d["contribution"] >= 1]
    return [d for d in drivers if d["contribution"] > 0.1]


def _score_student(*, entity_id: str, features: dict[str, Any], cuts: tuple[float, float] | None) -> Score:
    health = float(features["health"])
    risk = churn_probability(health)
    level = student_level(health, cuts)
    drivers: list[dict[str, Any]] = [
        {
            "feature": name,
            "value": float(features.get(name) or 0.0),
            "contribution": float(features.get(name) or 0.0),
            "why": str(features.get(f"{name}_why") or ""),
        }
        for name in HEALTH_COMPONENTS
    ]
    drivers = sorted(drivers, key=lambda d: -d["contribution"])[:MAX_DRIVERS]
    raising = _raising("student", drivers)
    head = f"{level.capitalize()} churn risk ({risk:.0%}) for student {entity_id}: health {health:.0f}/100"
    if raising:
        text = f"{head}, mainly because " + "; ".join(d["why"] for d in raising[:3]) + "."
    else:
        text = f"{head}; no warning signs: sessions, support calls and ratings look as usual."
    if len(text) > EXPLANATION_MAX:
        text = text[: EXPLANATION_MAX - 1].rstrip() + "…"
    actions: list[str] = []
    if level == "low":
        if raising:
            actions.append(f"No intervention needed; keep an eye on this: {raising[0]['why']}")
        actions.extend(a for a in STUDENT_CALM if len(actions) < 2)
    else:
        tier = 1 if level == "high" else 0
        if level == "high":
            actions.append(STUDENT_ACTIONS["platform"][1])
        for d in raising:
            action = STUDENT_ACTIONS[d["feature"]][tier]
            if action not in actions:
                actions.append(action)
            if len(actions) == 3:
                break
        fallback = [STUDENT_ACTIONS["engagement"][tier], STUDENT_ACTIONS["platform"][tier]]
        actions.extend(a for a in fallback if a not in actions and len(actions) < 2)
    return Score(
        risk=risk,
        level=level,
        explanation=text,
        recommendations=actions[:3],
        drivers=drivers,
        model=STUDENT_MODEL,
        features=dict(features),
    )


def _arrays(spec: Spec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.array([t.centre for t in spec.terms], dtype=float),
        np.array([t.scale for t in spec.terms], dtype=float),
        np.array([t.weight for t in spec.terms], dtype=float),
    )


def _value(features: dict[str, Any], term: Term) -> float:
    """A feature's value; an unknown one (None) sits at the centre and contributes nothing."""
    value = features.get(term.feature)
    return term.centre if value is None else float(value)


def contributions(*, entity_type: str, features: dict[str, Any]) -> np.ndarray:
    spec = SPECS[entity_type]
    centre, scale, weight = _arrays(spec)
    x = np.array([_value(features, t) for t in spec.terms], dtype=float)
    return weight * (x - centre) / scale


def risk_of(*, entity_type: str, features: dict[str, float]) -> float:
    z = SPECS[entity_type].intercept + float(contributions(entity_type=entity_type, features=features).sum())
    return 1.0 / (1.0 + math.exp(-z))


def risks(*, entity_type: str, rows: list[dict[str, Any]]) -> np.ndarray:
    """Risks of many feature vectors at once (the beat ranks every active entity); a student with no
    health score yet has no risk (NaN)."""
    if not rows:
        return np.zeros(0)
    if entity_type == "student":
        return np.array(
            [np.nan if r.get("health") is None else churn_probability(float(r["health"])) for r in rows]
        )
    spec = SPECS[entity_type]
    centre, scale, weight = _arrays(spec)
    x = np.array([[_value(r, t) for t in spec.terms] for r in rows], dtype=float)
    z = spec.intercept + ((x - centre) / scale) @ weight
    return 1.0 / (1.0 + np.exp(-z))


def features_moved(*, entity_type: str, before: dict[str, Any], after: dict[str, Any]) -> bool:
    """True when any figure the insight was scored on changed."""
    return before != after


# How far the risk may move before a kept insight no longer says it (5 percentage points).
RISK_STEP = 0.05


def _cited(entity_type: str, drivers: list[dict[str, Any]]) -> set[str]:
    """The features an explanation names as its reasons (the first three raising drivers), as a set:
    the same reasons in another order tell the same story."""
    return {d["feature"] for d in _raising(entity_type, drivers)[:3]}


def same_story(*, entity_type: str, before: Any, after: Score) -> bool:
    """True while a scored insight (`before`: risk, level, drivers) still says what a score now would:
    the same level, the same reasons (in any order), the risk within RISK_STEP. The figures it
    quotes may be older than the entity page's (they are as of its scored_at); what an ops user acts
    on — how risky, and why — is not."""
    return (
        before.level == after.level
        and abs(float(before.risk) - after.risk) < RISK_STEP
        and _cited(entity_type, before.drivers or []) == _cited(entity_type, after.drivers)
    )


def explain(
    *, entity_type: str, entity_id: str, risk: float, level: str, drivers: list[dict[str, Any]]
) -> tuple[str, list[str]]:
    """The templated explanation (≤ 400 chars) and 2–3 actions, from the risk-raising drivers."""
    spec = SPECS[entity_type]
    by_name = {t.feature: t for t in spec.terms}
    raising = _raising(entity_type, drivers)
    head = f"{level.capitalize()} {spec.noun} risk ({risk:.0%}) for {entity_type} {entity_id}"
    if raising:
        phrases = [by_name[d["feature"]].says(d["value"]) for d in raising[:3]]
        body = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
        text = f"{head}, mainly because {body}."
    else:
        text = f"{head}: no warning signs; {spec.calm_text}."
    if len(text) > EXPLANATION_MAX:
        text = text[: EXPLANATION_MAX - 1].rstrip() + "…"
    actions: list[str] = []
    for d in raising:
        action = by_name[d["feature"]].action.format(v=_n(d["value"]))
        if action not in actions:
            actions.append(action)
        if len(actions) == 3:
            break
    for calm in spec.calm_actions:
        if len(actions) >= 2:
            break
        actions.append(calm)
    return text, actions


def score(
    *, entity_type: str, entity_id: str, features: dict[str, Any], cuts: tuple[float, float] | None = None
) -> Score:
    """`cuts`: the runtime (critical, warning) health thresholds for a student's level (`health_cuts()`)."""
    if entity_type == "student":
        return _score_student(entity_id=entity_id, features=features, cuts=cuts)
    spec = SPECS[entity_type]
    contrib = contributions(entity_type=entity_type, features=features)
    risk = risk_of(entity_type=entity_type, features=features)
    # Ties broken by the spec's order so the drivers are deterministic.
    order = sorted(range(len(spec.terms)), key=lambda i: (-abs(float(contrib[i])), i))
    drivers = [
        {
            "feature": spec.terms[i].feature,
            "value": _value(features, spec.terms[i]),
            "contribution": round(float(contrib[i]), 3),
        }
        for i in order[:MAX_DRIVERS]
    ]
    level = level_for(risk)
    explanation, actions = explain(
        entity_type=entity_type, entity_id=entity_id, risk=risk, level=level, drivers=drivers
    )
    return Score(
        risk=round(risk, 4),
        level=level,
        explanation=explanation,
        recommendations=actions,
        drivers=drivers,
        model=spec.name,
        features=dict(features),
    )
