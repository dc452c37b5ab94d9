"""The beat task: the N riskiest students and tutors by the local model get insights."""

from __future__ import annotations

import pytest

from conftest import event, watched_student
from insights.models import Insight
from insights.tasks import score_riskiest
from iops.celery import app

pytestmark = pytest.mark.django_db


def test_beat_scores_only_the_riskiest_and_the_cache_holds(post, drain, settings):
    settings.INSIGHTS_BEAT_TOP_N = 2
    settings.INSIGHTS_CACHE_MINUTES = 30
    readings = {"stu_a": 95, "stu_b": 25, "stu_c": 80, "stu_d": 75, "stu_e": 60}
    for s in readings:
        watched_student(post, drain, s)  # weeks of history, usually read 85: all scored
    events = [event("customer_health_update", student_id=s, health_score=h) for s, h in readings.items()]
    events.append(event("customer_health_update", student_id="stu_new", health_score=10))  # not scored yet
    events += [event("ib_call_logged", student_id="stu_e") for _ in range(5)]
    events += [
        event("tutor_availability_updated", tutor_id="tut_idle", available_hours_this_week=30),
        event("tutor_availability_updated", tutor_id="tut_other", available_hours_this_week=20),
        event("tutor_availability_updated", tutor_id="tut_third", available_hours_this_week=10),
    ]
    assert post({"events": events}).status_code == 202
    drain()
    out = score_riskiest.apply().get()
    assert out == {"ranked": 4, "scored": 4, "cached": 0}
    students = set(Insight.objects.filter(entity_type="student").values_list("entity_id", flat=True))
    assert students == {"stu_b", "stu_e"}  # read 25, and read 60 with 5 support calls this week
    assert Insight.objects.filter(entity_type="tutor").count() == 2
    assert score_riskiest.apply().get() == {"ranked": 4, "scored": 0, "cached": 4}


def test_beat_entry_is_scheduled():
    entry = app.conf.beat_schedule["insights-score-riskiest"]
    assert entry["task"] == "insights.score_riskiest" and entry["schedule"] >= 60
    assert "insights.score_riskiest" in app.tasks
