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
    assert models == ["bedrock:" + bedrock_settings.BEDROCK_MODEL_ID] * 2 + ["local:health-v2"]
    third = Insight.objects.get(entity_id="stu_2")
    assert third.fallback_reason == "budget: 2 Bedrock calls this minute (INSIGHTS_BEDROCK_MAX_PER_MINUTE)"
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


def test_per_day_budget_is_per_utc_day(converse, scorable, bedrock_settings):
    bedrock_settings.INSIGHTS_BEDROCK_MAX_PER_DAY = 2
    converse.reply(GOOD)
    converse.reply(GOOD)
    score_at(T0, scorable("stu_1"))  # 12:00 UTC
    score_at(T0 + timedelta(hours=6), scorable("stu_2"))
    late = score_at(T0 + timedelta(hours=11, minutes=59), scorable("stu_3"))  # 23:59
    assert late.fallback_reason == "budget: 2 Bedrock calls this day (INSIGHTS_BEDROCK_MAX_PER_DAY)"
    converse.reply(GOOD)
    assert score_at(T0 + timedelta(hours=12), "stu_3").model.startswith("bedrock:")  # the next day


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
        "local:health-v2": 1,
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


def test_a_day_spent_does_not_spend_the_minute(converse, scorable, bedrock_settings):
    """Both windows are claimed together: when the day refuses, the minute's claim is rolled back."""
    bedrock_settings.INSIGHTS_BEDROCK_MAX_PER_MINUTE = 2
    bedrock_settings.INSIGHTS_BEDROCK_MAX_PER_DAY = 1
    converse.reply(GOOD)
    assert score_at(T0, scorable("stu_1")).model.startswith("bedrock:")
    refused = score_at(T0 + timedelta(seconds=1), scorable("stu_2"))
    assert refused.fallback_reason == "budget: 1 Bedrock calls this day (INSIGHTS_BEDROCK_MAX_PER_DAY)"
    bedrock_settings.INSIGHTS_BEDROCK_MAX_PER_DAY = 10
    converse.reply(GOOD)  # the minute still has its second slot
    assert score_at(T0 + timedelta(seconds=2), scorable("stu_3")).model.startswith("bedrock:")
    converse.assert_no_pending_responses()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_workers_make_exactly_the_budgeted_calls(fake_bedrock, bedrock_settings, post, drain):
    """Workers scoring at the same moment (threads, each with its own PostgreSQL connection, calling
    the Celery task) while earlier calls are still in flight: exactly the limit reaches Bedrock."""
    import threading

    from django.db import connection

    from conftest import event, watched_student

    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers need PostgreSQL (the SQLite test database is in memory)")
    limit, workers = 3, 10
    bedrock_settings.INSIGHTS_BEDROCK_MAX_PER_MINUTE = limit
    students = [f"stu_c{i}" for i in range(workers)]
    for s in students:
        watched_student(post, drain, s)  # weeks of history: scored, so there is an insight to ask for
    body = {"events": [event("customer_health_update", student_id=s, health_score=35) for s in students]}
    assert post(body).status_code == 202
    drain()
    start = threading.Barrier(workers)
    errors: list[BaseException] = []

    def work(student_id: str) -> None:
        from django.db import connection as thread_connection

        try:
            start.wait(timeout=30)
            score_churn.apply(args=("student", student_id)).get()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            thread_connection.close()

    with time_machine.travel(T0, tick=False):  # one minute window for all of them
        threads = [threading.Thread(target=work, args=(s,)) for s in students]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert not errors, errors
    assert fake_bedrock.calls == limit
    insights = list(Insight.objects.filter(entity_id__in=students))
    assert len(insights) == workers
    by_bedrock = [i for i in insights if i.model.startswith("bedrock:")]
    local = [i for i in insights if i.model == "local:health-v2"]
    assert len(by_bedrock) == limit and len(local) == workers - limit
    assert {i.fallback_reason for i in local} == {
        f"budget: {limit} Bedrock calls this minute (INSIGHTS_BEDROCK_MAX_PER_MINUTE)"
    }


def test_purge_drops_budget_counters_older_than_two_days(converse, scorable, bedrock_settings):
    from insights.models import BedrockBudget

    for when in (T0 - timedelta(days=3), T0 - timedelta(hours=1)):
        converse.reply(GOOD)
        score_at(when, scorable(f"stu_{when:%d%H}"))
    assert BedrockBudget.objects.count() == 4  # a minute and a day row per call
    insights_purge(now=T0)
    kept = sorted(BedrockBudget.objects.values_list("window", "start"))
    assert kept == [
        ("day", T0.replace(hour=0, minute=0, second=0)),
        ("minute", T0.replace(minute=0, second=0) - timedelta(hours=1)),
    ]
