"""Alert rules: pure functions from metrics snapshots to candidates. Thresholds come from
alerts.thresholds (the environment's defaults, or what staff set in the admin)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from alerts import thresholds
from alerts.models import AlertType, EntityType, Severity
from metrics.health import poisson_cdf
from metrics.selectors import subject_region_key


@dataclass(frozen=True)
class Candidate:
    type: str
    entity_type: str
    entity_id: str
    severity: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return f"{self.type}:{self.entity_type}:{self.entity_id}"


# A batch judges a student's session velocity only when it brings an event of theirs from this last
# stretch of time. History arriving late (a backfill, a replayed export) fills the prior weeks before
# the current one, so judging on it would flag a collapse that the next events undo; such students are
# judged by the clock instead (the stale-snapshot refresh) once their data has settled.
VELOCITY_LIVE_WINDOW = timedelta(hours=1)


# A failed first session raises its alert while it is news, not when a backfill brings it weeks later.
FIRST_SESSION_NEWS = timedelta(days=7)


def health_reasons(components: dict | None, *, top: int = 2) -> list[str]:
    """The reasons that took the most points off a health score, largest first."""
    rows = sorted(
        ((float(c.get("points", 0)), name, c.get("why", "")) for name, c in (components or {}).items()),
        reverse=True,
    )
    return [f"{why} (−{points:.0f})" for points, _, why in rows[:top] if points >= 1]


def student_rules(snap, *, judge_velocity: bool = True, now: datetime | None = None) -> Iterable[Candidate]:
    health = snap.health_score
    if health is not None and health < thresholds.get("ALERT_LOW_HEALTH_WARNING"):
        critical = health < thresholds.get("ALERT_LOW_HEALTH_CRITICAL")
        threshold = (
            thresholds.get("ALERT_LOW_HEALTH_CRITICAL")
            if critical
            else thresholds.get("ALERT_LOW_HEALTH_WARNING")
        )
        reasons = health_reasons(snap.health_components)
        yield Candidate(
            AlertType.LOW_HEALTH_SCORE,
            EntityType.STUDENT,
            snap.student_id,
            Severity.CRITICAL if critical else Severity.WARNING,
            f"Student {snap.student_id} health {health:.0f} (below {threshold:.0f})"
            + (f": {'; '.join(reasons)}" if reasons else ""),
            {
                "health_score": health,
                "threshold": threshold,
                "reasons": reasons,
                "platform_health_score": snap.platform_health_score,
                "platform_health_baseline": snap.platform_health_baseline,
                "platform_churn_risk": snap.platform_churn_risk,
            },
        )
    if snap.ib_calls_14d >= thresholds.get("ALERT_IB_CALLS_14D"):
        yield Candidate(
            AlertType.HIGH_IB_CALL_FREQUENCY,
            EntityType.STUDENT,
            snap.student_id,
            Severity.WARNING,
            f"Student {snap.student_id} made {snap.ib_calls_14d} support calls in 14 days",
            {
                "ib_calls_14d": snap.ib_calls_14d,
                "reasons": snap.ib_reasons_14d,
                "threshold": thresholds.get("ALERT_IB_CALLS_14D"),
                "unresolved_14d": snap.ib_unresolved_14d,
            },
        )
    first = (snap.health_components or {}).get("first_session", {})
    recent = now is None or (
        snap.first_session_at is not None and now - snap.first_session_at <= FIRST_SESSION_NEWS
    )
    if snap.first_session_ok is False and float(first.get("points", 0)) > 0 and recent:
        yield Candidate(
            AlertType.FIRST_SESSION_FAILED,
            EntityType.STUDENT,
            snap.student_id,
            Severity.WARNING,
            f"Student {snap.student_id}'s first session went badly",
            {
                "first_session_id": snap.first_session_id,
                "first_session_at": snap.first_session_at.isoformat() if snap.first_session_at else None,
            },
        )
    velocity, prior = snap.velocity, snap.prior_weekly_mean
    if (
        judge_velocity
        and velocity is not None
        and prior >= thresholds.get("ALERT_VELOCITY_MIN_PRIOR_WEEKLY")
        and velocity < thresholds.get("ALERT_VELOCITY_DROP_RATIO")
        # A quiet week is common for a student of a few sessions a week: only an unlikely one alarms.
        and (chance := poisson_cdf(snap.sessions_7d, prior)) <= thresholds.get("ALERT_VELOCITY_MAX_CHANCE")
    ):
        yield Candidate(
            AlertType.VELOCITY_DROP,
            EntityType.STUDENT,
            snap.student_id,
            Severity.WARNING,
            f"Student {snap.student_id}: {snap.sessions_7d} session{'' if snap.sessions_7d == 1 else 's'} "
            f"this week vs {prior:.1f}/week before",
            {
                "sessions_7d": snap.sessions_7d,
                "prior_weekly_mean": prior,
                "velocity": velocity,
                "chance": round(chance, 4),
                "threshold": thresholds.get("ALERT_VELOCITY_DROP_RATIO"),
            },
        )


def tutor_rules(snap) -> Iterable[Candidate]:
    reasons = []
    util = snap.utilisation
    if util is not None and util > thresholds.get("ALERT_TUTOR_UTILISATION"):
        reasons.append(f"utilisation {util:.0%}")
    rating = snap.avg_rating
    if (
        rating is not None
        and snap.rated_sessions >= thresholds.get("ALERT_TUTOR_MIN_RATED")
        and rating < thresholds.get("ALERT_TUTOR_RATING")
    ):
        reasons.append(f"mean rating {rating:.2f} over {snap.rated_sessions} sessions")
    if reasons:
        yield Candidate(
            AlertType.TUTOR_OVERLOAD,
            EntityType.TUTOR,
            snap.tutor_id,
            Severity.WARNING,
            f"Tutor {snap.tutor_id}: {', '.join(reasons)}",
            {
                "utilisation": util,
                "hours_taught_7d": snap.hours_taught_7d,
                "available_hours": snap.available_hours,
                "avg_rating": rating,
                "rated_sessions": snap.rated_sessions,
                "burnout_risk": snap.burnout_risk,
                "utilisation_threshold": thresholds.get("ALERT_TUTOR_UTILISATION"),
                "rating_threshold": thresholds.get("ALERT_TUTOR_RATING"),
            },
        )


def subject_region_rules(snap, now: datetime) -> Iterable[Candidate]:
    if snap.balance_status != "high_demand":
        return
    ratio = snap.demand_supply_ratio
    sustained_for = (now - snap.status_since) if snap.status_since else timedelta(0)
    no_tutors = snap.platform_available_tutors == 0 and (snap.platform_active_students or 0) > 0
    if no_tutors or (ratio is not None and ratio >= thresholds.get("ALERT_IMBALANCE_SEVERE_RATIO")):
        severity, level = Severity.CRITICAL, "severe shortage"
    elif sustained_for >= timedelta(minutes=thresholds.get("ALERT_IMBALANCE_SUSTAINED_MINUTES")):
        severity, level = Severity.WARNING, "sustained high demand"
    else:
        severity, level = Severity.INFO, "high demand"
    yield Candidate(
        AlertType.SUPPLY_DEMAND_IMBALANCE,
        EntityType.SUBJECT_REGION,
        subject_region_key(snap.subject, snap.region),
        severity,
        f"{snap.subject} / {snap.region}: {level} (demand/supply {ratio if ratio is not None else '?'})",
        {
            "demand_supply_ratio": ratio,
            "demand_score": snap.platform_demand_score,
            "supply_score": snap.platform_supply_score,
            "available_tutors": snap.platform_available_tutors,
            "active_students": snap.platform_active_students,
            "status_since": snap.status_since.isoformat() if snap.status_since else None,
            "minutes_in_status": round(sustained_for.total_seconds() / 60, 1),
            "own_ratio": snap.own_ratio,
            "sustained_minutes": thresholds.get("ALERT_IMBALANCE_SUSTAINED_MINUTES"),
            "severe_ratio": thresholds.get("ALERT_IMBALANCE_SEVERE_RATIO"),
        },
    )


# The alert types each entity's evaluation decides: an active one not raised again is seen clear.
RULE_TYPES: dict[str, tuple[str, ...]] = {
    EntityType.STUDENT: (
        AlertType.LOW_HEALTH_SCORE,
        AlertType.HIGH_IB_CALL_FREQUENCY,
        AlertType.FIRST_SESSION_FAILED,
        AlertType.VELOCITY_DROP,
    ),
    EntityType.TUTOR: (AlertType.TUTOR_OVERLOAD,),
    EntityType.SUBJECT_REGION: (AlertType.SUPPLY_DEMAND_IMBALANCE,),
    EntityType.GLOBAL: (AlertType.RATE_ANOMALY,),
}
# Raised at most once per entity, ever (the condition is a fact about the past).
ONCE_PER_ENTITY = {AlertType.FIRST_SESSION_FAILED}
