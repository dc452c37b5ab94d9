"""Runtime thresholds: staff change them in the admin (validated, audited) and the next batch uses them;
other processes see a change within THRESHOLDS_CACHE_SECONDS, without a query per event."""

from __future__ import annotations

import pytest
from django.db.models import F

from alerts import thresholds
from alerts.models import Alert, ThresholdChange, ThresholdSet
from conftest import platform_reading

pytestmark = pytest.mark.django_db

CHANGE = "/admin/alerts/thresholdset/1/change/"


def _form(**values) -> dict:
    """The admin form as a browser posts it: every threshold, blank unless given."""
    return {name: values.get(name, "") for name in thresholds.SPECS}


def test_the_admin_list_opens_the_one_set_of_thresholds_with_the_environment_defaults(admin_client, settings):
    settings.ALERT_LOW_HEALTH_WARNING = 70.0
    resp = admin_client.get("/admin/alerts/thresholdset/")
    assert resp.status_code == 200 and f'href="{CHANGE}"' in resp.content.decode()
    page = admin_client.get(CHANGE).content.decode()
    assert 'name="ALERT_LOW_HEALTH_WARNING"' in page and "Environment default: 70" in page


def test_a_change_in_the_admin_applies_to_the_next_batch_and_is_audited(
    admin_client, admin_user, post, drain
):
    platform_reading(post, drain, 62)  # health 72.8: above the default 70, no alert
    assert not Alert.objects.filter(type="low_health_score").exists()
    assert thresholds.get("ALERT_LOW_HEALTH_WARNING") == 70  # this process has cached the defaults

    admin_client.get("/admin/alerts/thresholdset/")
    resp = admin_client.post(CHANGE, _form(ALERT_LOW_HEALTH_WARNING="75"))
    assert resp.status_code == 302, resp.content.decode()[:2000]

    platform_reading(post, drain, 62)  # the very next batch judges against 75
    alert = Alert.objects.get(type="low_health_score")
    assert alert.severity == "warning" and alert.details["threshold"] == 75
    [row] = ThresholdChange.objects.all()
    assert (row.name, row.old_value, row.new_value, row.by) == (
        "ALERT_LOW_HEALTH_WARNING",
        None,
        75,
        admin_user,
    )
    assert ThresholdSet.objects.get().version == 1

    # back to the default: audited too, and the KPI/level readers follow
    assert admin_client.post(CHANGE, _form()).status_code == 302
    latest = ThresholdChange.objects.first()
    assert (latest.old_value, latest.new_value, latest.version) == (75, None, 2)
    assert thresholds.get("ALERT_LOW_HEALTH_WARNING") == 70
    history = admin_client.get("/admin/alerts/thresholdchange/").content.decode()
    assert history.count("ALERT_LOW_HEALTH_WARNING") >= 2 and "admin" in history


@pytest.mark.parametrize(
    ("values", "field", "message"),
    [
        ({"ALERT_LOW_HEALTH_WARNING": "150"}, "ALERT_LOW_HEALTH_WARNING", "less than or equal to 100"),
        (
            {"ALERT_LOW_HEALTH_WARNING": "40"},
            "ALERT_LOW_HEALTH_CRITICAL",
            "must be below ALERT_LOW_HEALTH_WARNING",
        ),
        (
            {"ALERT_LOW_HEALTH_WARNING": "60", "ALERT_LOW_HEALTH_CRITICAL": "65"},
            "ALERT_LOW_HEALTH_CRITICAL",
            "(65 vs 60)",
        ),
        (
            {"ALERT_ANOMALY_Z_WARNING": "12"},
            "ALERT_ANOMALY_Z_WARNING",
            "must be below ALERT_ANOMALY_Z_CRITICAL",
        ),
        ({"ALERT_IB_CALLS_14D": "2.5"}, "ALERT_IB_CALLS_14D", "Enter a whole number"),
    ],
)
def test_invalid_thresholds_are_rejected_with_a_message_and_change_nothing(
    admin_client, values, field, message
):
    ThresholdSet.objects.create(pk=1)
    resp = admin_client.post(CHANGE, _form(**values))
    assert resp.status_code == 200  # the form again, with its errors
    errors = resp.context["adminform"].form.errors
    assert field in errors and message in " ".join(errors[field])
    assert not ThresholdChange.objects.exists() and ThresholdSet.objects.get().version == 0


def test_another_workers_change_is_seen_after_the_ttl_with_one_query_per_ttl(
    monkeypatch, settings, django_assert_num_queries
):
    """As another process's save looks from here: the row changes under a warm cache."""
    settings.THRESHOLDS_CACHE_SECONDS = 5.0
    clock = [1000.0]
    monkeypatch.setattr(thresholds.time, "monotonic", lambda: clock[0])
    ThresholdSet.objects.create(pk=1, values={}, version=0)
    assert thresholds.get("ALERT_TUTOR_RATING") == settings.ALERT_TUTOR_RATING
    ThresholdSet.objects.filter(pk=1).update(values={"ALERT_TUTOR_RATING": 4.2}, version=F("version") + 1)
    clock[0] += 4.9
    with django_assert_num_queries(0):  # within the TTL: no query, however many reads (events)
        assert all(thresholds.get("ALERT_TUTOR_RATING") == settings.ALERT_TUTOR_RATING for _ in range(100))
    clock[0] += 0.2
    with django_assert_num_queries(1):  # one row read per TTL, not per event
        assert thresholds.get("ALERT_TUTOR_RATING") == 4.2


def test_a_changed_setting_is_seen_at_once_under_a_warm_cache(settings, django_assert_num_queries):
    """The cached effective values hold the environment's defaults: override_settings (the `settings`
    fixture) reaches the next read, as an admin save does in its own process."""
    ThresholdSet.objects.create(pk=1, values={"ALERT_TUTOR_RATING": 4.2}, version=1)
    assert thresholds.get("ALERT_TUTOR_MIN_RATED") == settings.ALERT_TUTOR_MIN_RATED
    settings.ALERT_TUTOR_MIN_RATED = settings.ALERT_TUTOR_MIN_RATED + 7
    assert thresholds.get("ALERT_TUTOR_MIN_RATED") == settings.ALERT_TUTOR_MIN_RATED
    with django_assert_num_queries(0):  # the override still held, no read per call
        assert all(thresholds.get("ALERT_TUTOR_RATING") == 4.2 for _ in range(100))
