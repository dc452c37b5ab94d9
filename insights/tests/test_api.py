"""GET /api/insights: auth, filters, shape."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from insights.models import Insight

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)


def make(
    entity_id: str, *, entity_type: str = "student", alert_id: int | None = None, minutes: int = 0
) -> Insight:
    return Insight.objects.create(
        entity_type=entity_type,
        entity_id=entity_id,
        alert_id=alert_id,
        risk=0.8,
        level="high",
        explanation="High churn risk.",
        recommendations=["Call them", "Offer a session"],
        drivers=[{"feature": "health_gap", "value": 70.0, "contribution": 2.25}],
        features={"health_gap": 70.0},
        model="local:health-v2",
        scored_at=NOW + timedelta(minutes=minutes),
    )


def get(client, api_key, query=""):
    return client.get(f"/api/insights{query}", HTTP_AUTHORIZATION=f"Bearer {api_key}")


def test_requires_a_key_or_staff_session(client, outsider, staff_user):
    assert client.get("/api/insights").status_code == 401
    client.force_login(outsider)
    assert client.get("/api/insights").status_code == 401
    client.force_login(staff_user)
    assert client.get("/api/insights").status_code == 200


def test_shape_newest_first(client, api_key):
    make("stu_1", minutes=0)
    make("stu_1", alert_id=5, minutes=1)
    body = get(client, api_key).json()
    assert [r["alert_id"] for r in body["results"]] == [5, None]
    first = body["results"][0]
    assert set(first) >= {
        "entity_type",
        "entity_id",
        "alert_id",
        "risk",
        "level",
        "explanation",
        "recommendations",
        "drivers",
        "model",
        "fallback_reason",
        "scored_at",
    }
    assert first["drivers"] == [{"feature": "health_gap", "value": 70.0, "contribution": 2.25}]
    assert first["recommendations"] == ["Call them", "Offer a session"]
    assert first["scored_at"].startswith("2026-03-02T12:01:00")


def test_filters(client, api_key):
    make("stu_1", alert_id=7)
    make("stu_2", minutes=1)
    make("tut_1", entity_type="tutor", minutes=2)
    ids = lambda q: [(r["entity_type"], r["entity_id"]) for r in get(client, api_key, q).json()["results"]]  # noqa: E731
    assert ids("?entity_type=tutor") == [("tutor", "tut_1")]
    assert ids("?entity_type=student&entity_id=stu_2") == [("student", "stu_2")]
    assert ids("?alert_id=7") == [("student", "stu_1")]
    assert len(ids("?limit=2")) == 2


@pytest.mark.parametrize("query", ["?entity_type=subject", "?limit=0", "?limit=501", "?alert_id=x"])
def test_bad_filters_are_a_400_json_error(client, api_key, query):
    resp = get(client, api_key, query)
    assert resp.status_code == 400
    assert resp.json()["error"] and resp.json()["errors"][0]["field"]
