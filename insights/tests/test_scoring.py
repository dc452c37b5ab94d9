"""Scoring through its public interfaces: ingest → alert → insight, the Celery task, the cache."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.utils import timezone

from alerts.models import Alert
from conftest import READING_WARNING, READING_WARNING_LOWER, event, watched_student
from insights.models import Insight
from insights.tasks import score_alerts, score_churn

pytestmark = pytest.mark.django_db


def send(post, drain, capture, *events):
    """Post `events` and process them with after-commit hooks run. Every student they name has weeks of
    history first (conftest.watched_student: a session, a platform reading of 85), so they are scored."""
    from metrics.models import StudentSnapshot

    for student in dict.fromkeys(e["student_id"] for e in events if "student_id" in e):
        if not StudentSnapshot.objects.filter(student_id=student, observed_since__isnull=False).exists():
            watched_student(post, drain, student)
    resp = post({"events": list(events)})
    assert resp.status_code == 202, resp.content
    with capture(execute=True):
        drain()


def score_at(moment, *args):
    """score_churn run at a frozen moment."""
    with time_machine.travel(moment, tick=False):
        return score_churn.apply(args=args).get()


def test_low_health_alert_gets_a_linked_insight_end_to_end(post, drain, django_capture_on_commit_callbacks):
    send(
        post,
        drain,
        django_capture_on_commit_callbacks,
        event("customer_health_update", student_id="stu_7", health_score=30),
    )
    alert = Alert.objects.get(type="low_health_score", entity_id="stu_7")
    insight = Insight.objects.get(alert_id=alert.pk)
    assert (insight.entity_type, insight.entity_id) == ("student", "stu_7")
    assert insight.level in {"medium", "high"} and 0 <= insight.risk <= 1
    assert insight.model == "local:health-v2" and insight.fallback_reason == ""
    assert insight.features["health"] == 40 and insight.level == "high"
    assert insight.drivers[0]["feature"] == "platform" and insight.drivers[0]["contribution"] > 0
    assert "health 40/100" in insight.explanation and "platform reads 30 (usually 85)" in insight.explanation
    assert 2 <= len(insight.recommendations) <= 3


def test_a_repeat_is_rescored_when_what_its_insight_says_changed(
    post, drain, django_capture_on_commit_callbacks, settings
):
    """The same reading again scores nothing new; a lower one (still a warning, no escalation; the risk
    moves by more than local_model.RISK_STEP) gets a fresh insight quoting it. (Every repeat
    counts here; inside a tick a repeat is not rescored at all: alerts/tests/test_lifecycle.py.)"""
    settings.ALERT_REPEAT_TICK_SECONDS = 0
    for reading in (READING_WARNING, READING_WARNING):
        send(
            post,
            drain,
            django_capture_on_commit_callbacks,
            event("customer_health_update", student_id="stu_8", health_score=reading),
        )
    assert Alert.objects.get(entity_id="stu_8").occurrences == 2
    assert Insight.objects.filter(entity_id="stu_8").count() == 1
    send(
        post,
        drain,
        django_capture_on_commit_callbacks,
        event("customer_health_update", student_id="stu_8", health_score=READING_WARNING_LOWER),
    )
    alert = Alert.objects.get(entity_id="stu_8")
    assert alert.occurrences == 3 and alert.severity == "warning"
    latest = Insight.objects.filter(entity_id="stu_8").order_by("-scored_at", "-pk").first()
    assert Insight.objects.filter(entity_id="stu_8").count() == 2 and latest.alert_id == alert.pk
    assert f"platform reads {READING_WARNING_LOWER}" in latest.explanation


def test_a_repeat_whose_figures_moved_keeps_its_insight_while_the_story_holds(
    post, drain, django_capture_on_commit_callbacks, settings
):
    """Twenty minutes on, the same reading again: the days since the last session moved (the insight's
    features differ) but its level, reasons and risk did not, so the alert keeps its insight (no new
    row, no push). Past INSIGHTS_CACHE_MINUTES the repeat is scored afresh."""
    settings.ALERT_REPEAT_TICK_SECONDS = 0
    settings.INSIGHTS_CACHE_MINUTES = 30
    start = timezone.now()
    for minutes in (0, 20):
        with time_machine.travel(start + timedelta(minutes=minutes), tick=False):
            send(
                post,
                drain,
                django_capture_on_commit_callbacks,
                event("customer_health_update", student_id="stu_10", health_score=READING_WARNING),
            )
    alert = Alert.objects.get(entity_id="stu_10")
    kept = Insight.objects.get(entity_id="stu_10")
    assert alert.occurrences == 2 and kept.alert_id == alert.pk
    from metrics.models import StudentSnapshot

    now_days = StudentSnapshot.objects.get(student_id="stu_10").days_since_last_session
    assert kept.features["days_since_last_session"] != now_days  # the figures did move
    with time_machine.travel(start + timedelta(minutes=51), tick=False):
        send(
            post,
            drain,
            django_capture_on_commit_callbacks,
            event("customer_health_update", student_id="stu_10", health_score=READING_WARNING),
        )
    latest = Insight.objects.filter(entity_id="stu_10").order_by("-scored_at", "-pk").first()
    assert Insight.objects.filter(entity_id="stu_10").count() == 2 and latest.alert_id == alert.pk
    assert latest.features["days_since_last_session"] > kept.features["days_since_last_session"]


def test_escalation_rescores_when_features_moved(post, drain, django_capture_on_commit_callbacks):
    send(
        post,
        drain,
        django_capture_on_commit_callbacks,
        event("customer_health_update", student_id="stu_9", health_score=READING_WARNING),
    )
    send(
        post,
        drain,
        django_capture_on_commit_callbacks,
        event("customer_health_update", student_id="stu_9", health_score=35),
    )
    first, second = Insight.objects.filter(entity_id="stu_9").order_by("scored_at", "pk")
    assert second.risk > first.risk
    assert first.alert_id == second.alert_id == Alert.objects.get(entity_id="stu_9").pk


def test_scoring_failure_never_breaks_ingest(
    post, drain, django_capture_on_commit_callbacks, monkeypatch, caplog
):
    def boom(*args, **kwargs):
        raise RuntimeError("broker down")

    monkeypatch.setattr(score_alerts, "delay", boom)
    monkeypatch.setattr(score_churn, "delay", boom)
    send(
        post,
        drain,
        django_capture_on_commit_callbacks,
        event("customer_health_update", student_id="stu_3", health_score=30),
    )
    assert Alert.objects.filter(entity_id="stu_3").exists()
    assert not Insight.objects.exists()
    assert "insight scoring not enqueued" in caplog.text


def test_task_scores_a_tutor_and_skips_unknown_entities(post, drain, django_capture_on_commit_callbacks):
    send(
        post,
        drain,
        django_capture_on_commit_callbacks,
        event("tutor_availability_updated", tutor_id="tut_1", available_hours_this_week=10),
    )
    insight_id = score_churn.apply(args=("tutor", "tut_1")).get()
    insight = Insight.objects.get(pk=insight_id)
    assert insight.model == "local:burnout-logit-v1" and insight.alert_id is None
    assert score_churn.apply(args=("student", "nobody")).get() is None


def test_cache_keeps_an_unchanged_entity_and_links_a_new_alert(
    post, drain, django_capture_on_commit_callbacks, settings
):
    settings.INSIGHTS_CACHE_MINUTES = 30
    send(
        post,
        drain,
        django_capture_on_commit_callbacks,
        event("customer_health_update", student_id="stu_5", health_score=75),
    )
    start = timezone.now()
    first_id = score_at(start, "student", "stu_5")
    assert score_at(start + timedelta(minutes=29), "student", "stu_5", 999) == first_id
    assert Insight.objects.get(pk=first_id).alert_id == 999  # linked, not re-scored
    assert score_at(start + timedelta(minutes=31), "student", "stu_5") != first_id
    assert Insight.objects.filter(entity_id="stu_5").count() == 2


def test_cache_rescores_inside_the_window_when_features_moved(
    post, drain, django_capture_on_commit_callbacks, settings
):
    settings.INSIGHTS_CACHE_MINUTES = 30
    send(
        post,
        drain,
        django_capture_on_commit_callbacks,
        event("customer_health_update", student_id="stu_6", health_score=90),
    )
    first_id = score_churn.apply(args=("student", "stu_6")).get()
    # 4 support calls: ib_calls_14d moves by far more than half its scale
    send(
        post,
        drain,
        django_capture_on_commit_callbacks,
        *[event("ib_call_logged", student_id="stu_6", reason="billing_question") for _ in range(4)],
    )
    latest = Insight.objects.filter(entity_id="stu_6").order_by("-scored_at", "-pk").first()
    assert latest.pk != first_id and latest.features["ib_calls_14d"] == 4


def test_cache_serves_the_latest_of_several_insights_in_the_window(
    post, drain, django_capture_on_commit_callbacks, settings
):
    """Two insights of one student inside the window (the features moved in between): an unchanged
    entity is served the newer one, whose features match, not re-scored and not the stale first."""
    settings.INSIGHTS_CACHE_MINUTES = 30
    send(
        post,
        drain,
        django_capture_on_commit_callbacks,
        event("customer_health_update", student_id="stu_8", health_score=90),
    )
    start = timezone.now()
    first_id = score_at(start, "student", "stu_8")
    send(
        post,
        drain,
        django_capture_on_commit_callbacks,
        *[event("ib_call_logged", student_id="stu_8", reason="billing_question") for _ in range(4)],
    )
    second_id = score_at(start + timedelta(minutes=5), "student", "stu_8")
    assert score_at(start + timedelta(minutes=10), "student", "stu_8") == second_id
    assert second_id != first_id
    assert Insight.objects.get(pk=second_id).features["ib_calls_14d"] == 4


def test_insight_score_rejects_an_unknown_entity_type():
    from insights.services import insight_score

    with pytest.raises(ValueError):
        insight_score(entity_type="subject", entity_id="x", now=datetime(2026, 1, 1, tzinfo=UTC))


def test_two_alerts_for_one_student_in_a_batch_each_get_their_insight(
    post, drain, django_capture_on_commit_callbacks, settings, client, staff_user, api_key
):
    """The second alert's scoring hits the cache (same features, same batch): the cached insight is
    copied for it (cached_from), so the API and the alert drawer find an insight for each alert."""
    settings.INSIGHTS_CACHE_MINUTES = 30
    send(
        post,
        drain,
        django_capture_on_commit_callbacks,
        event("customer_health_update", student_id="stu_2a", health_score=30),
        *[event("ib_call_logged", student_id="stu_2a", reason="technical_problem") for _ in range(3)],
    )
    alerts = {a.type: a.pk for a in Alert.objects.filter(entity_id="stu_2a")}
    assert set(alerts) == {"low_health_score", "high_ib_call_frequency"}
    auth = {"HTTP_AUTHORIZATION": f"Bearer {api_key}"}
    found = {}
    for alert_type, alert_id in alerts.items():
        body = client.get(f"/api/insights?alert_id={alert_id}", **auth).json()
        assert len(body["results"]) == 1, (alert_type, body)
        found[alert_type] = body["results"][0]
    first, second = sorted(found.values(), key=lambda r: r["id"])
    assert second["cached_from"] == first["id"] and first["cached_from"] is None
    assert (second["risk"], second["explanation"], second["scored_at"]) == (
        first["risk"],
        first["explanation"],
        first["scored_at"],
    )
    # One scoring, not two: the copy is not counted as a model call.
    from insights.selectors import model_call_counts

    assert model_call_counts(now=timezone.now())["local:health-v2"] == 1
    client.force_login(staff_user)
    for alert_id in alerts.values():
        html = client.get(f"/alerts/{alert_id}", HTTP_HX_REQUEST="true").content.decode()
        assert f'id="panel-insight-{alert_id}"' in html and "No insight has been scored" not in html
        assert f"{round(first['risk'] * 100)}%" in html
    # Rescoring the second alert (a redelivered task) does not copy again.
    score_churn.apply(args=("student", "stu_2a", alerts["high_ib_call_frequency"]))
    assert Insight.objects.filter(entity_id="stu_2a").count() == 2


def test_a_batchs_alerts_are_scored_together_in_a_few_statements(
    post, drain, django_capture_on_commit_callbacks, django_assert_max_num_queries
):
    """Twenty students and a tutor alerted in one batch: every alert gets its own linked insight,
    and the scoring is one task whose statement count does not grow with the alerts."""
    students = [f"stu_b{i}" for i in range(20)]
    send(
        post,
        drain,
        django_capture_on_commit_callbacks,
        *[event("customer_health_update", student_id=s, health_score=30 + i) for i, s in enumerate(students)],
    )
    alerts = list(Alert.objects.filter(entity_id__in=students).values_list("entity_type", "entity_id", "pk"))
    assert len(alerts) == 20
    by_alert = {i.alert_id: i for i in Insight.objects.filter(entity_id__in=students)}
    assert set(by_alert) == {pk for _, _, pk in alerts}
    assert all(by_alert[pk].entity_id == entity_id for _, entity_id, pk in alerts)
    # The same alerts scored again (cache off: all new scorings) — a constant number of statements.
    Insight.objects.all().delete()
    with django_assert_max_num_queries(6):
        ids = score_alerts.apply(args=([list(a) for a in alerts],)).get()
    assert len(ids) == 20 and Insight.objects.filter(pk__in=ids, cached_from=None).count() == 20
    # Unknown entities are skipped, the rest still scored, in the items' order.
    ids = score_alerts.apply(args=([["student", "nobody", None], ["student", "stu_b3", None]],)).get()
    assert [Insight.objects.get(pk=pk).entity_id for pk in ids] == ["stu_b3"]


def test_alerts_answered_from_the_cache_take_a_few_statements_and_no_duplicates(
    post, drain, django_capture_on_commit_callbacks, django_assert_max_num_queries, settings
):
    """Twenty cached insights answer new alerts in one task: those without an alert take it (claimed),
    the others are copied for it (cached_from); redelivered, the task finds them and writes nothing.
    However many alerts, a constant number of statements."""
    settings.INSIGHTS_CACHE_MINUTES = 30
    students = [f"stu_r{i}" for i in range(20)]
    send(
        post,
        drain,
        django_capture_on_commit_callbacks,
        *[event("customer_health_update", student_id=s, health_score=30 + i) for i, s in enumerate(students)],
    )
    scored = {i.entity_id: i for i in Insight.objects.filter(entity_id__in=students)}
    assert len(scored) == 20 and all(i.alert_id is not None for i in scored.values())
    unlinked = students[:10]  # as if the beat had scored them: no alert yet
    Insight.objects.filter(entity_id__in=unlinked).update(alert_id=None)
    items = [["student", s, 900_000 + n] for n, s in enumerate(students)]
    with django_assert_max_num_queries(6):
        ids = score_alerts.apply(args=(items,)).get()
    got = {i.pk: i for i in Insight.objects.filter(pk__in=ids)}
    assert [(got[pk].entity_id, got[pk].alert_id) for pk in ids] == [(s, a) for _, s, a in items]
    for pk, (_, student, _alert) in zip(ids, items, strict=True):
        original = scored[student].pk
        if student in unlinked:  # claimed: the scored insight itself
            assert pk == original and got[pk].cached_from_id is None
        else:  # copied: the scored insight keeps its alert
            assert pk != original and got[pk].cached_from_id == original
            assert got[pk].explanation == scored[student].explanation and got[pk].risk == scored[student].risk
    # Redelivered (and a second alert for one student in the same task): the same rows, one new copy.
    again = [*items, ["student", students[0], 999_999]]
    with django_assert_max_num_queries(6):
        assert score_alerts.apply(args=(again,)).get()[:20] == ids
    assert Insight.objects.filter(entity_id__in=students).count() == 20 + 10 + 1


def test_a_failing_alert_does_not_cost_the_others_their_insights(
    post, drain, django_capture_on_commit_callbacks, monkeypatch, caplog
):
    """The batch fails on one student's scoring: each alert is then scored on its own in a
    savepoint — the others get their insights, the failing one is logged, the alerts all stand."""
    from insights import local_model

    real = local_model.score

    def flaky(*, entity_type, entity_id, features, **kwargs):
        if entity_id == "stu_bad":
            raise RuntimeError("model exploded")
        return real(entity_type=entity_type, entity_id=entity_id, features=features, **kwargs)

    monkeypatch.setattr(local_model, "score", flaky)
    send(
        post,
        drain,
        django_capture_on_commit_callbacks,
        event("customer_health_update", student_id="stu_ok1", health_score=30),
        event("customer_health_update", student_id="stu_bad", health_score=30),
        event("customer_health_update", student_id="stu_ok2", health_score=30),
    )
    assert Alert.objects.filter(entity_id__in=["stu_ok1", "stu_bad", "stu_ok2"]).count() == 3
    assert sorted(Insight.objects.values_list("entity_id", flat=True)) == ["stu_ok1", "stu_ok2"]
    assert "insight not scored" in caplog.text and "model exploded" in caplog.text
