"""The local model: cohort ranking, the prototype baseline, drivers, explanations, determinism."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from insights import local_model
from insights.features import student_features, tutor_features
from metrics.models import StudentSnapshot, TutorSnapshot

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)


def student(**overrides) -> StudentSnapshot:
    """An engaged, steady student; tests override what they are about."""
    fields = dict(
        student_id="stu_1",
        sessions_7d=3,
        sessions_14d=6,
        sessions_30d=12,
        ib_calls_14d=0,
        ib_unresolved_14d=0,
        ib_high_priority_14d=0,
        ib_reasons_14d={},
        avg_rating_given=4.6,
        first_session_ok=True,
        days_since_last_session=1.5,
        prior_weekly_mean=3.0,
        velocity=1.0,
        velocity_trend="steady",
        platform_health_score=85.0,
        health_score=88.0,
        as_of=NOW,
        updated_at=NOW,
    )
    fields.update(overrides)
    return StudentSnapshot(**fields)


def tutor(**overrides) -> TutorSnapshot:
    fields = dict(
        tutor_id="tut_1",
        sessions_7d=8,
        sessions_14d=16,
        sessions_30d=34,
        avg_rating=4.6,
        rated_sessions=30,
        completion_rate=0.97,
        hours_taught_7d=8.0,
        available_hours=16.0,
        utilisation=0.5,
        prior_weekly_mean=8.0,
        avg_rating_7d=4.6,
        avg_rating_prior=4.6,
        as_of=NOW,
        updated_at=NOW,
    )
    fields.update(overrides)
    return TutorSnapshot(**fields)


def score_student(snap: StudentSnapshot) -> local_model.Score:
    return local_model.score(
        entity_type="student", entity_id=snap.student_id, features=student_features(snap)
    )


def test_ib_calls_and_collapsing_velocity_score_above_a_steady_student():
    steady = score_student(student())
    slipping = score_student(
        student(
            student_id="stu_2",
            ib_calls_14d=4,
            ib_unresolved_14d=1,
            ib_reasons_14d={"scheduling_issue": 3, "tutor_concern": 1},
            sessions_7d=0,
            velocity=0.0,
            velocity_trend="falling",
            days_since_last_session=9,
            platform_health_score=55.0,
        )
    )
    assert slipping.risk > steady.risk + 0.4
    assert slipping.level == "high"
    top = [d["feature"] for d in slipping.drivers[:3]]
    assert "ib_calls_14d" in top and "velocity_drop" in top
    assert "4 support calls in 14 days" in slipping.explanation


def test_engaged_high_health_student_is_low_risk_with_calm_advice():
    result = score_student(student(sessions_7d=4, platform_health_score=95.0))
    assert result.level == "low" and result.risk < 0.1
    assert "no warning signs" in result.explanation
    assert 2 <= len(result.recommendations) <= 3


@pytest.mark.parametrize(
    ("feature_change", "driver"),
    [
        ({"first_session_ok": False}, "first_session_failed"),
        ({"platform_health_score": 20.0}, "health_gap"),
        ({"days_since_last_session": 25.0, "sessions_7d": 0, "velocity": 0.0}, "days_since_last_session"),
    ],
)
def test_each_risk_signal_raises_risk_and_shows_as_a_driver(feature_change, driver):
    base = score_student(student())
    worse = score_student(student(**feature_change))
    assert worse.risk > base.risk
    assert driver in [d["feature"] for d in worse.drivers]
    contribution = next(d["contribution"] for d in worse.drivers if d["feature"] == driver)
    assert contribution > 0


def test_drivers_are_the_largest_contributions_and_sum_to_the_log_odds():
    snap = student(ib_calls_14d=3, sessions_7d=1, platform_health_score=60.0)
    features = student_features(snap)
    result = score_student(snap)
    contrib = local_model.contributions(entity_type="student", features=features)
    assert len(result.drivers) == local_model.MAX_DRIVERS
    assert [abs(d["contribution"]) for d in result.drivers] == sorted(
        (round(abs(c), 3) for c in contrib), reverse=True
    )[: local_model.MAX_DRIVERS]
    z = local_model.STUDENT.intercept + contrib.sum()
    assert result.risk == pytest.approx(1 / (1 + np.exp(-z)), abs=1e-4)


def test_rank_agrees_with_the_prototype_baseline_over_a_synthetic_population():
    rng = np.random.default_rng(7)
    rows = []
    for i in range(400):
        health = float(rng.uniform(15, 100))
        engaged = health / 100  # healthier students tend to book more and call less
        sessions_7d = int(rng.poisson(4 * engaged))
        ib = int(rng.poisson(3 * (1 - engaged)))
        prior = float(rng.uniform(1, 5))
        snap = student(
            student_id=f"stu_{i}",
            platform_health_score=health,
            sessions_7d=sessions_7d,
            sessions_30d=sessions_7d * 4 + int(rng.integers(0, 4)),
            ib_calls_14d=ib,
            ib_unresolved_14d=int(rng.binomial(ib, 0.3)),
            prior_weekly_mean=prior,
            velocity=sessions_7d / prior,
            days_since_last_session=float(rng.uniform(0, 3)) if sessions_7d else float(rng.uniform(7, 30)),
            avg_rating_given=float(np.clip(rng.normal(3 + 1.8 * engaged, 0.5), 1, 5)),
            first_session_ok=bool(rng.random() < 0.6 + 0.4 * engaged),
        )
        baseline = min(100.0, 0.5 * (100 - health) + min(5 * ib, 30) + 4 * max(0, 5 - sessions_7d))
        rows.append((score_student(snap).risk, baseline))
    frame = pd.DataFrame(rows, columns=["local", "baseline"])
    ranks = frame.rank()  # Spearman's rho: Pearson's r of the ranks
    rho = ranks["local"].corr(ranks["baseline"])
    print(f"spearman rho local vs baseline: {rho:.3f}")
    assert rho > 0.85, rho


def test_scoring_is_deterministic():
    snap = student(ib_calls_14d=5, platform_health_score=40.0, sessions_7d=0, velocity=0.0)
    first, second = score_student(snap), score_student(snap)
    assert first == second


def test_explanation_is_bounded_and_actions_are_two_or_three_distinct():
    result = score_student(
        student(
            ib_calls_14d=6,
            ib_unresolved_14d=5,
            ib_high_priority_14d=4,
            sessions_7d=0,
            velocity=0.0,
            first_session_ok=False,
            avg_rating_given=1.0,
            platform_health_score=5.0,
            days_since_last_session=30,
        )
    )
    assert len(result.explanation) <= 400
    assert 2 <= len(result.recommendations) <= 3
    assert len(set(result.recommendations)) == len(result.recommendations)


def test_overloaded_tutor_with_sliding_ratings_scores_above_a_comfortable_one():
    calm = local_model.score(entity_type="tutor", entity_id="tut_1", features=tutor_features(tutor()))
    strained = local_model.score(
        entity_type="tutor",
        entity_id="tut_2",
        features=tutor_features(
            tutor(
                tutor_id="tut_2",
                utilisation=1.1,
                hours_taught_7d=30.0,
                sessions_7d=20,
                avg_rating_7d=3.6,
                avg_rating=4.1,
            )
        ),
    )
    assert calm.level == "low" and strained.level == "high"
    assert strained.drivers[0]["feature"] == "utilisation"
    assert "110% of available hours" in strained.explanation
    assert strained.model == "local:burnout-logit-v1"


def test_features_moved_means_half_a_scale_unit():
    features = student_features(student())
    assert not local_model.features_moved(entity_type="student", before=features, after=features)
    nudged = dict(features, health_gap=features["health_gap"] + 9)  # scale 20: 0.45
    assert not local_model.features_moved(entity_type="student", before=features, after=nudged)
    moved = dict(features, health_gap=features["health_gap"] + 10)
    assert local_model.features_moved(entity_type="student", before=features, after=moved)
    assert local_model.features_moved(entity_type="student", before={}, after=features)
