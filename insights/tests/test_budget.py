"""Bedrock budget and cache with frozen time; the call counts /metrics shows; 90-day purge."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from insights.models import Insight
from insights.services import insights_purge
from insights.tasks import score_churn

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 2, 12, 0, 5, tzinfo=UTC)
GOOD = json.dumps(
    {"risk": 0.7, "level": "high", "explanation": "Slipping.", "recommendations": ["Call", "Offer a session"]}
)


def score_at(when: datetime, student_id: str) -> Insight:
    with time_machine.travel(when, tick=False):
        return Insight.objects.get(pk=score_churn.apply(args=("student", student_id)).get())


def test_per_minute_budget_falls_back_then_recovers_next_minute(converse, scorable, bedrock_settings):
    bedrock_settings.INSIGHTS_BEDROCK_MAX_PER_MINUTE = 2
    students = [scorable(f"stu_{i}") for i in range(4)]
    converse.reply(GOOD)
    converse.reply(GOOD)
    models = [score_at(T0 + timedelta(seconds=i), s).model for i, s in enumerate(students[:3])]
    assert models == ["bedrock:" + bedrock_settings.BEDROCK_MODEL_ID] * 2 + ["local:churn-logit-v1"]
    third = Insight.objects.get(entity_id="stu_2")
    assert third.fallback_reason == "budget: 2 Bedrock calls in the last minute"
    converse.reply(GOOD)
    assert score_at(T0 + timedelta(seconds=61), students[3]).model.startswith("bedrock:")
    converse.assert_no_pending_responses()


def test_failed_calls_spend_budget_too(converse, scorable, bedrock_settings):
    bedrock_settings.INSIGHTS_BEDROCK_MAX_PER_MINUTE = 1
    converse.reply("no json here")
    first = score_at(T0, scorable("stu_a"))
    second = score_at(T0 + timedelta(seconds=5), scorable("stu_b"))
    assert first.fallback_reason.startswith("bedrock error")
    assert second.fallback_reason.startswith("budget:")
    converse.assert_no_pending_responses()


def test_per_day_budget(converse, scorable, bedrock_settings):
    bedrock_settings.INSIGHTS_BEDROCK_MAX_PER_DAY = 2
    converse.reply(GOOD)
    converse.reply(GOOD)
    score_at(T0, scorable("stu_1"))
    score_at(T0 + timedelta(hours=6), scorable("stu_2"))
    late = score_at(T0 + timedelta(hours=23), scorable("stu_3"))
    assert late.fallback_reason == "budget: 2 Bedrock calls in the last day"
    converse.reply(GOOD)
    assert score_at(T0 + timedelta(hours=24, seconds=1), "stu_3").model.startswith("bedrock:")


def test_cache_saves_a_bedrock_call_until_the_window_ends(converse, scorable, bedrock_settings):
    bedrock_settings.INSIGHTS_CACHE_MINUTES = 30
    scorable("stu_1")
    converse.reply(GOOD)
    first = score_at(T0, "stu_1")
    assert score_at(T0 + timedelta(minutes=20), "stu_1").pk == first.pk  # no call queued: none made
    converse.reply(GOOD)
    assert score_at(T0 + timedelta(minutes=31), "stu_1").pk != first.pk
    converse.assert_no_pending_responses()


def test_model_call_counts_for_metrics(converse, scorable, bedrock_settings, client, staff_user):
    from insights.selectors import model_call_counts

    bedrock_settings.INSIGHTS_BEDROCK_MAX_PER_MINUTE = 1
    converse.reply(GOOD)
    score_at(T0, scorable("stu_1"))
    score_at(T0 + timedelta(seconds=1), scorable("stu_2"))  # over budget: local, a fallback
    score_at(T0 - timedelta(days=2), scorable("stu_3"))  # outside the day
    counts = model_call_counts(now=T0 + timedelta(minutes=1))
    assert counts == {
        "bedrock:" + bedrock_settings.BEDROCK_MODEL_ID: 1,
        "local:churn-logit-v1": 1,
        "fallbacks": 1,
    }
    client.force_login(staff_user)
    with time_machine.travel(T0 + timedelta(minutes=1), tick=False):
        text = client.get("/metrics").content.decode()
    assert 'iops_churn_model_calls{outcome="fallbacks"} 1.0' in text


def test_purge_deletes_insights_older_than_90_days_in_batches(scorable):
    scorable("stu_1")
    for days in (120, 91, 89, 1):
        with time_machine.travel(T0 - timedelta(days=days), tick=False):
            score_churn.apply(args=("student", "stu_1"))
    assert insights_purge(now=T0, batch_size=1) == 2
    kept = sorted(Insight.objects.values_list("scored_at", flat=True))
    assert kept == [T0 - timedelta(days=89), T0 - timedelta(days=1)]
