"""Alert rules: pure functions from metrics snapshots to candidates. Thresholds are settings."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from alerts.models import AlertType, EntityType, Severity


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


def student_rules(snap) -> Iterable[Candidate]:
    health = snap.platform_health_score
    if health is not None and health < settings.ALERT_LOW_HEALTH_WARNING:
        critical = health < settings.ALERT_LOW_HEALTH_CRITICAL
        yield Candidate(
            AlertType.LOW_HEALTH_SCORE,
            EntityType.STUDENT,
            snap.student_id,
            Severity.CRITICAL if critical else Severity.WARNING,
            f"Student {snap.student_id} health {health:.0f} (below {settings.ALERT_LOW_HEALTH_CRITICAL if critical else settings.ALERT_LOW_HEALTH_WARNING:.0f})",
            {
                "platform_health_score": health,
                "platform_churn_risk": snap.platform_churn_risk,
                "our_health_score": snap.health_score,
                "threshold": settings.ALERT_LOW_HEALTH_CRITICAL
                if critical
                else settings.ALERT_LOW_HEALTH_WARNING,
            },
        )
    if snap.ib_calls_14d >= settings.ALERT_IB_CALLS_14D:
        yield Candidate(
            AlertType.HIGH_IB_CALL_FREQUENCY,
            EntityType.STUDENT,
            snap.student_id,
            Severity.WARNING,
            f"Student {snap.student_id} made {snap.ib_calls_14d} support calls in 14 days",
            {
                "ib_calls_14d": snap.ib_calls_14d,
                "reasons": snap.ib_reasons_14d,
                "threshold": settings.ALERT_IB_CALLS_14D,
                "unresolved_14d": snap.ib_unresolved_14d,
            },
        )


RULES = {"student": student_rules}
