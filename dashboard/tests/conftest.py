"""Dashboard fixtures: rows made straight in the derived tables (what the pipeline would leave)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.utils import timezone


def make_alert(
    *,
    entity_id: str = "stu_1",
    entity_type: str = "student",
    severity: str = "warning",
    status: str = "open",
    type: str = "low_health_score",
    message: str | None = None,
    now: datetime | None = None,
    **extra,
):  # noqa: A002
    from alerts.models import Alert

    now = now or timezone.now()
    return Alert.objects.create(
        fingerprint=f"{type}:{entity_type}:{entity_id}:{status}:{Alert.objects.count()}",
        type=type,
        severity=severity,
        status=status,
        entity_type=entity_type,
        entity_id=entity_id,
        message=message or f"Student {entity_id} health 42",
        details=extra.pop("details", {"platform_health_score": 42.0, "threshold": 70}),
        first_seen=extra.pop("first_seen", now - timedelta(hours=1)),
        last_seen=extra.pop("last_seen", now),
        **extra,
    )


def make_student(student_id: str = "stu_1", *, now: datetime | None = None, **fields):
    from metrics.models import StudentSnapshot

    now = now or timezone.now()
    defaults = {
        "sessions_7d": 2,
        "sessions_14d": 3,
        "sessions_30d": 6,
        "health_score": 62.5,
        "platform_health_score": 42.0,
        "health_components": {
            "engagement": {"points": 22.5, "why": "1 session in 7 days vs 2.0/week before"},
            "platform": {"points": 15.0, "why": "platform reads 42 (usually 60)"},
            "recency": {"points": 0.0, "why": "last session 1 day ago"},
        },
        "as_of": now,
        "updated_at": now,
    }
    defaults.update(fields)
    return StudentSnapshot.objects.create(student_id=student_id, **defaults)


def make_insight(
    entity_id: str = "stu_1", *, alert_id: int | None = None, now: datetime | None = None, **fields
):
    from insights.models import Insight

    now = now or timezone.now()
    defaults = {
        "entity_type": "student",
        "risk": 0.72,
        "level": "high",
        "explanation": "Sessions fell and support calls rose.",
        "recommendations": ["Call the student", "Offer a free session"],
        "drivers": [
            {"feature": "ib_calls_14d", "value": 4, "contribution": 0.3},
            {"feature": "sessions_7d", "value": 0, "contribution": 0.25},
        ],
        "model": "local-logistic-v1",
        "scored_at": now,
    }
    defaults.update(fields)
    return Insight.objects.create(entity_id=entity_id, alert_id=alert_id, **defaults)


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client
