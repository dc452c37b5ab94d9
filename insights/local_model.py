"""The local, explainable risk model: a logistic model over standardised features (numpy).

risk = σ(b + Σ wᵢ·(xᵢ − μᵢ)/sᵢ). The centres μ and scales s describe a typical student or tutor;
the weights w are set by hand from what the domain knows (see ARCHITECTURE.md, "Churn insights")
and checked against the prototype's baseline by rank correlation in insights/tests. Each term
wᵢ·(xᵢ − μᵢ)/sᵢ is that feature's contribution in log-odds: the drivers, which also pick the
sentences of the explanation and the recommended actions. Deterministic: same features, same text.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

LEVEL_HIGH = 0.7
LEVEL_MEDIUM = 0.4
MAX_DRIVERS = 5
EXPLANATION_MAX = 400
# The cache's "moved materially": some feature moved by half its scale or more.
MATERIAL_SHIFT = 0.5


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


STUDENT = Spec(
    name="local:churn-logit-v1",
    noun="churn",
    intercept=-1.0,
    terms=(
        Term(
            "health_gap",
            25,
            20,
            0.9,
            lambda v: f"health is {100 - v:.0f}/100",
            "Have the account manager call within 24 hours to review goals and progress",
        ),
        Term(
            "ib_calls_14d",
            1,
            1.5,
            0.7,
            lambda v: f"{_n(v)} support calls in 14 days",
            "Assign one support owner to close the open tickets and follow up personally",
        ),
        Term(
            "ib_unresolved_14d",
            0.3,
            1,
            0.3,
            lambda v: f"{_n(v)} unresolved support calls",
            "Resolve the {v} unresolved support issues and confirm with the student",
        ),
        Term(
            "ib_high_priority_14d",
            0.2,
            1,
            0.25,
            lambda v: f"{_n(v)} high-priority calls",
            "Escalate the high-priority support calls to a team lead",
        ),
        Term(
            "ib_tutor_or_technical_14d",
            0.3,
            1,
            0.2,
            lambda v: f"{_n(v)} calls about tutors or technical problems",
            "Offer a tutor change or a technical check before the next session",
        ),
        Term(
            "sessions_7d",
            2,
            1.5,
            -0.5,
            lambda v: f"only {_n(v)} sessions this week",
            "Offer a free make-up session this week to restart the routine",
        ),
        Term(
            "sessions_30d",
            8,
            5,
            -0.2,
            lambda v: f"{_n(v)} sessions in 30 days",
            "Propose a fixed weekly schedule with the same tutor",
        ),
        Term(
            "velocity_drop",
            0.15,
            0.3,
            0.6,
            lambda v: f"sessions down to {100 * (1 - v):.0f}% of their usual pace",
            "Send a re-engagement offer and suggest a fixed weekly slot",
        ),
        Term(
            "days_since_last_session",
            4,
            6,
            0.5,
            lambda v: f"no session for {v:.0f} days",
            "Reach out personally and book the next session with them",
        ),
        Term(
            "first_session_failed",
            0.1,
            0.3,
            0.4,
            lambda v: "their first session failed",
            "Book a free second first session with a top-rated tutor",
        ),
        Term(
            "rating_gap",
            1,
            1,
            0.35,
            lambda v: f"rates sessions {5 - v:.1f}/5",
            "Ask for feedback on recent sessions and offer a different tutor",
        ),
        Term(
            "unsuccessful_30d",
            0.5,
            1,
            0.2,
            lambda v: f"{_n(v)} unsuccessful sessions in 30 days",
            "Review the unsuccessful sessions with the tutors involved",
        ),
    ),
    calm_actions=(
        "No intervention needed; keep the current weekly schedule",
        "Invite a rating after the next session to keep the signal fresh",
    ),
    calm_text="sessions, support calls and ratings all look normal",
)

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
            lambda v: f"{v:.0f} hours taught this week",
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

SPECS = {"student": STUDENT, "tutor": TUTOR}


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


def _arrays(spec: Spec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.array([t.centre for t in spec.terms], dtype=float),
        np.array([t.scale for t in spec.terms], dtype=float),
        np.array([t.weight for t in spec.terms], dtype=float),
    )


def contributions(*, entity_type: str, features: dict[str, float]) -> np.ndarray:
    spec = SPECS[entity_type]
    centre, scale, weight = _arrays(spec)
    x = np.array([float(features[t.feature]) for t in spec.terms], dtype=float)
    return weight * (x - centre) / scale


def risk_of(*, entity_type: str, features: dict[str, float]) -> float:
    z = SPECS[entity_type].intercept + float(contributions(entity_type=entity_type, features=features).sum())
    return 1.0 / (1.0 + math.exp(-z))


def risks(*, entity_type: str, rows: list[dict[str, float]]) -> np.ndarray:
    """risk_of for many feature vectors at once (the beat ranks every active entity)."""
    spec = SPECS[entity_type]
    if not rows:
        return np.zeros(0)
    centre, scale, weight = _arrays(spec)
    x = np.array([[float(r[t.feature]) for t in spec.terms] for r in rows], dtype=float)
    z = spec.intercept + ((x - centre) / scale) @ weight
    return 1.0 / (1.0 + np.exp(-z))


def features_moved(*, entity_type: str, before: dict[str, Any], after: dict[str, float]) -> bool:
    """True when any feature moved by MATERIAL_SHIFT of its scale or more (or the set changed)."""
    spec = SPECS[entity_type]
    for t in spec.terms:
        if t.feature not in before:
            return True
        if abs(float(after[t.feature]) - float(before[t.feature])) / t.scale >= MATERIAL_SHIFT:
            return True
    return False


def explain(
    *, entity_type: str, entity_id: str, risk: float, level: str, drivers: list[dict[str, Any]]
) -> tuple[str, list[str]]:
    """The templated explanation (≤ 400 chars) and 2–3 actions, from the risk-raising drivers."""
    spec = SPECS[entity_type]
    by_name = {t.feature: t for t in spec.terms}
    raising = [d for d in drivers if d["contribution"] > 0.1]
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


def score(*, entity_type: str, entity_id: str, features: dict[str, float]) -> Score:
    spec = SPECS[entity_type]
    contrib = contributions(entity_type=entity_type, features=features)
    risk = risk_of(entity_type=entity_type, features=features)
    # Ties broken by the spec's order so the drivers are deterministic.
    order = sorted(range(len(spec.terms)), key=lambda i: (-abs(float(contrib[i])), i))
    drivers = [
        {
            "feature": spec.terms[i].feature,
            "value": float(features[spec.terms[i].feature]),
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
