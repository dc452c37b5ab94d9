from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_dashboard_requires_staff_login(client, outsider):
    resp = client.get("/")
    assert resp.status_code == 302 and resp["Location"].startswith("/accounts/login/")
    client.force_login(outsider)
    assert client.get("/").status_code == 302


def test_dashboard_renders_every_contract_kpi(client, staff_user):
    client.force_login(staff_user)
    resp = client.get("/?range=7d")
    assert resp.status_code == 200
    html = resp.content.decode()
    for name in (
        "events_per_min",
        "sessions_today",
        "active_students",
        "ib_calls_24h",
        "avg_health",
        "open_alerts",
    ):
        assert f'data-kpi="{name}"' in html
    assert 'data-ws-state="connecting"' in html and 'ws-connect="/ws/dashboard/?range=7d"' in html


def test_healthz_is_open_and_reports_checks(client):
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.json() == {
        "status": "ok",
        "checks": {"database": "ok", "stream": "ok", "channel_layer": "ok"},
    }


def test_healthz_names_the_failing_stream(client, settings):
    settings.IOPS_STREAM = "redis"
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    resp = client.get("/healthz")
    assert resp.status_code == 503 and resp.json()["checks"]["stream"].startswith("error")


def test_admin_lists_events_and_snapshots(admin_client, post, drain):
    from conftest import event, watched_student

    watched_student(post, drain, "stu_adm")
    post(event("session_completed", session_id="s1", student_id="stu_adm", tutor_id="tut_adm"))
    post(event("customer_health_update", student_id="stu_adm", health_score=42))
    drain()
    for url, needle in (
        ("/admin/ingest/event/", "stu_adm"),
        ("/admin/metrics/studentsnapshot/", "stu_adm"),
        ("/admin/metrics/tutorsnapshot/", "tut_adm"),
        ("/admin/alerts/alert/", "stu_adm"),
    ):
        resp = admin_client.get(url)
        assert resp.status_code == 200 and needle in resp.content.decode(), url


# --- the dashboard page --------------------------------------------------------------------------

from datetime import timedelta  # noqa: E402

from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402

from dashboard.tests.conftest import make_alert, make_insight, make_student  # noqa: E402


def test_range_selector_renders_a_partial_for_htmx_and_keeps_filters_in_links(staff_client):
    resp = staff_client.get("/?range=7d&severity=critical", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="live")
    html = resp.content.decode()
    assert resp.status_code == 200 and "<html" not in html and 'id="live"' in html
    assert 'ws-connect="/ws/dashboard/?range=7d&amp;severity=critical"' in html
    assert 'href="/?range=30d&amp;severity=critical"' in html and 'hx-push-url="true"' in html
    assert (
        '<a href="/?range=7d&amp;severity=critical" hx-get="/?range=7d&amp;severity=critical" aria-current="true">'
        in html
    )
    # A history restore (back button) gets the whole page.
    resp = staff_client.get("/?range=7d", HTTP_HX_REQUEST="true", HTTP_HX_HISTORY_RESTORE_REQUEST="true")
    assert "<html" in resp.content.decode()


def test_unknown_range_and_filters_fall_back_to_defaults(staff_client):
    html = staff_client.get("/?range=99y&severity=<b>&status=nope").content.decode()
    assert 'ws-connect="/ws/dashboard/?range=24h"' in html and "<b>" not in html


def test_feed_filters_by_severity_and_status(staff_client):
    crit = make_alert(entity_id="stu_c", severity="critical")
    warn = make_alert(entity_id="stu_w", severity="warning")
    done = make_alert(entity_id="stu_r", severity="critical", status="resolved")
    html = staff_client.get("/?severity=critical").content.decode()
    assert f'data-alert-id="{crit.pk}"' in html and f'data-alert-id="{done.pk}"' in html
    assert f'data-alert-id="{warn.pk}"' not in html
    html = staff_client.get("/?severity=critical&status=active").content.decode()
    assert f'data-alert-id="{crit.pk}"' in html and f'data-alert-id="{done.pk}"' not in html


def test_feed_is_newest_first_with_entity_links_occurrences_and_actions(staff_client):
    now = timezone.now()
    old = make_alert(entity_id="stu_old", last_seen=now - timedelta(hours=2), occurrences=7)
    new = make_alert(entity_id="stu new/1|x", last_seen=now)
    html = staff_client.get("/").content.decode()
    assert html.index(f'data-alert-id="{new.pk}"') < html.index(f'data-alert-id="{old.pk}"')
    assert 'href="/entities/student/stu%20new%2F1%7Cx"' in html
    assert "×7" in html
    assert f'hx-post="/alerts/{old.pk}/acknowledge"' in html


def test_kpis_show_trends_against_the_previous_period(staff_client):
    from metrics.models import GlobalMinute

    now = timezone.now().replace(second=0, microsecond=0)
    GlobalMinute.objects.create(minute=now - timedelta(minutes=2), received=50, ib_calls=3)
    GlobalMinute.objects.create(minute=now - timedelta(hours=30), received=10, ib_calls=9)
    html = staff_client.get("/?range=24h").content.decode()
    assert 'data-kpi="events_in_range">50<' in html and 'data-kpi="ib_calls_24h">3<' in html
    # Events went up from 10 (neutral), IB calls went down from 9 (good).
    assert 'class="trend up" title="up from 10 the previous period"' in html
    assert 'class="trend down good" title="down from 9 the 24 hours before"' in html


def test_charts_are_json_islands_for_every_chart(staff_client):
    make_student("stu_h", health_score=45.0)
    html = staff_client.get("/").content.decode()
    for island in (
        "chart-events",
        "chart-sessions",
        "chart-ib-reasons",
        "chart-health",
        "chart-supply-demand",
    ):
        assert f'<script id="{island}" type="application/json">' in html
        assert f'data-chart="{island}"' in html


def _page_queries(client) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get("/?range=30d").status_code == 200
    return len(ctx.captured_queries)


def test_dashboard_query_count_does_not_grow_with_alerts_or_entities(staff_client, settings):
    from alerts import thresholds
    from metrics.models import StudentHourly, SubjectRegionSnapshot

    # A running server's thresholds are cached (one read per TTL): warm, and kept out of the count.
    settings.THRESHOLDS_CACHE_SECONDS = 3600
    thresholds.get("ALERT_LOW_HEALTH_WARNING")
    now = timezone.now()
    make_alert(entity_id="stu_0")
    make_student("stu_0")
    small = _page_queries(staff_client)
    for i in range(1, 60):
        make_alert(entity_id=f"stu_{i}", severity=("critical", "warning", "info")[i % 3])
        make_student(f"stu_{i}", health_score=float(i))
        make_insight(f"stu_{i}")
        StudentHourly.objects.create(
            student_id=f"stu_{i}", hour=now.replace(minute=0, second=0, microsecond=0), ib_calls=1
        )
        SubjectRegionSnapshot.objects.create(
            subject=f"S{i}", region="west", platform_demand_score=i, updated_at=now
        )
    large = _page_queries(staff_client)
    assert large == small, (small, large)
    assert large <= 25


# --- entity pages and search --------------------------------------------------------------------


def test_student_page_shows_snapshot_history_components_alerts_and_insight(staff_client):
    from metrics.models import Session, StudentHourly

    now = timezone.now()
    make_student("stu_9")
    StudentHourly.objects.create(
        student_id="stu_9",
        hour=now.replace(minute=0, second=0, microsecond=0),
        sessions_completed=2,
        ib_calls=1,
    )
    Session.objects.create(
        session_id="sess_1", student_id="stu_9", tutor_id="tut_1", subject="Physics", started_at=now
    )
    alert = make_alert(entity_id="stu_9")
    make_insight("stu_9")
    resp = staff_client.get("/entities/student/stu_9")
    html = resp.content.decode()
    assert resp.status_code == 200
    assert (
        'data-chart="entity-history"' in html
        and '<script id="entity-history" type="application/json">' in html
    )
    history = resp.context["history"]
    assert len(history["labels"]) == 30 and history["datasets"][0]["data"][-1] == 2
    assert f'data-alert-id="{alert.pk}"' in html and "1 session in 7 days vs 2.0/week before" in html
    # The stored insight quotes other figures than the snapshot's now: the page explains the figures it
    # shows (the local reading of the snapshot) and lists the stored one as earlier.
    assert "Sessions fell and support calls rose." not in html
    assert "Medium churn risk" in html and "health 62/100" in html
    assert 'href="/entities/tutor/tut_1"' in html


def test_the_health_pill_and_components_follow_the_configured_thresholds(staff_client, settings):
    make_student("stu_6")  # health 62.5
    html = staff_client.get("/entities/student/stu_6").content.decode()
    assert '<span class="pill sev-warning">health 62</span>' in html and "at risk below 70," in html
    settings.ALERT_LOW_HEALTH_WARNING, settings.ALERT_LOW_HEALTH_CRITICAL = 60.0, 40.0
    html = staff_client.get("/entities/student/stu_6").content.decode()
    assert '<span class="pill ok">health 62</span>' in html and "at risk below 60," in html
    settings.ALERT_LOW_HEALTH_WARNING, settings.ALERT_LOW_HEALTH_CRITICAL = 80.0, 65.0
    html = staff_client.get("/entities/student/stu_6").content.decode()
    assert '<span class="pill sev-critical">health 62</span>' in html


def test_the_health_pill_follows_thresholds_set_in_the_admin(staff_client, staff_user):
    from alerts.thresholds import thresholds_update

    make_student("stu_5")  # health 62.5: at risk under the defaults (70, 50)
    overrides = {"ALERT_LOW_HEALTH_WARNING": 62.0, "ALERT_LOW_HEALTH_CRITICAL": 40.0}
    thresholds_update(overrides=overrides, user=staff_user, now=timezone.now())
    html = staff_client.get("/entities/student/stu_5").content.decode()
    assert '<span class="pill ok">health 62</span>' in html and "at risk below 62," in html


def test_an_insight_that_still_quotes_the_current_figures_is_the_one_shown(staff_client):
    from insights.features import student_features

    snap = make_student("stu_8")
    make_insight(
        "stu_8", features=student_features(snap), model="bedrock:x", explanation="Written by Bedrock."
    )
    html = staff_client.get("/entities/student/stu_8").content.decode()
    assert "Written by Bedrock." in html


def test_a_student_with_too_little_history_says_so(staff_client):
    make_student("stu_7", health_score=None)
    html = staff_client.get("/entities/student/stu_7").content.decode()
    assert html.count('data-health="not-enough-data"') == 2  # the snapshot and the insight card
    assert "Churn risk (" not in html


def test_tutor_and_subject_region_pages(staff_client):
    from metrics.models import SubjectRegionSnapshot, SupplyDemandReading, TutorSnapshot

    now = timezone.now()
    TutorSnapshot.objects.create(
        tutor_id="tut_7", sessions_7d=3, avg_rating=4.5, rated_sessions=3, as_of=now, updated_at=now
    )
    assert staff_client.get("/entities/tutor/tut_7").status_code == 200
    SubjectRegionSnapshot.objects.create(
        subject="Computer Science", region="west", balance_status="high_demand", updated_at=now
    )
    SupplyDemandReading.objects.create(
        event_id="r1",
        subject="Computer Science",
        region="west",
        reported_at=now,
        demand_score=80,
        supply_score=40,
    )
    resp = staff_client.get("/entities/subject_region/Computer%20Science%7Cwest")
    assert resp.status_code == 200
    assert resp.context["history"]["datasets"][0]["data"][-1] == 80.0
    assert "high demand" in resp.content.decode()


def test_unknown_entity_is_a_404_page_and_bad_type_too(staff_client):
    assert staff_client.get("/entities/student/nobody").status_code == 404
    assert staff_client.get("/entities/planet/mars").status_code == 404


def test_entity_pages_need_staff(client):
    resp = client.get("/entities/student/stu_1")
    assert resp.status_code == 302 and resp["Location"].startswith("/accounts/login/")


def test_search_redirects_on_an_exact_id_and_lists_prefix_matches(staff_client):
    make_student("stu_100")
    make_student("stu_101")
    resp = staff_client.get("/search?q=stu_100")
    assert resp.status_code == 302 and resp["Location"] == "/entities/student/stu_100"
    resp = staff_client.get("/search?q=stu_10")
    html = resp.content.decode()
    assert (
        resp.status_code == 200
        and "/entities/student/stu_101" in html
        and "/entities/student/stu_100" in html
    )
    assert "No student" in staff_client.get("/search?q=zzz").content.decode()


XSS_IMG = '<img src=x onerror="window.__xss=1">'
XSS_SCRIPT = "<script>window.__xss=1</script>"


def test_event_strings_are_escaped_everywhere_they_render(staff_client):
    make_student(XSS_IMG, health_components={"<b>x</b>": {"score": 1, "weight": 1, "why": XSS_SCRIPT}})
    alert = make_alert(
        entity_id=XSS_IMG, message=f"Student {XSS_IMG} {XSS_SCRIPT}", details={XSS_SCRIPT: XSS_IMG}
    )
    make_insight(
        XSS_IMG,
        alert_id=alert.pk,
        explanation=XSS_SCRIPT,
        recommendations=[XSS_IMG],
        drivers=[{"feature": XSS_SCRIPT, "value": XSS_IMG, "contribution": 0.5}],
    )
    pages = [
        staff_client.get("/"),
        staff_client.get(f"/alerts/{alert.pk}", HTTP_HX_REQUEST="true"),
        staff_client.get(f"/alerts/{alert.pk}"),
        staff_client.get("/entities/student/" + XSS_IMG.replace("/", "%2F")),
        staff_client.get("/search?q=" + XSS_SCRIPT),
    ]
    for resp in pages:
        html = resp.content.decode()
        assert resp.status_code in (200, 404), resp.status_code
        assert XSS_IMG not in html and XSS_SCRIPT not in html and "<b>x</b>" not in html
    assert "&lt;img src=x onerror=&quot;window.__xss=1&quot;&gt;" in pages[0].content.decode()


# --- the alert feed: order, pages, groups ------------------------------------------------------------


def _feed_ids(html: str) -> list[int]:
    import re

    return [int(i) for i in re.findall(r'data-alert-id="(\d+)"', html)]


def test_the_feed_shows_the_most_severe_first_then_the_newest(staff_client):
    now = timezone.now()
    info = make_alert(entity_id="stu_i", severity="info", last_seen=now)
    old_critical = make_alert(entity_id="stu_c", severity="critical", last_seen=now - timedelta(hours=3))
    warning = make_alert(entity_id="stu_w", severity="warning", last_seen=now - timedelta(minutes=5))
    html = staff_client.get("/").content.decode()
    assert _feed_ids(html) == [old_critical.pk, warning.pk, info.pk]
    assert "most severe first, then newest" in html


def test_the_feed_pages_instead_of_cutting_at_fifty(staff_client):
    now = timezone.now()
    made = [
        make_alert(
            entity_id=f"stu_{i}",
            type="velocity_drop",
            last_seen=now - timedelta(minutes=i),
            first_seen=now - timedelta(hours=i + 1),
        )
        for i in range(120)
    ]  # one an hour apart: no two raised in the same hour, no groups
    html = staff_client.get("/").content.decode()
    seen = _feed_ids(html)
    assert len(seen) == 50 and "Show more alerts" in html
    while "Show more alerts" in html:
        import re

        link = re.search(r'hx-get="(/alerts/feed\?[^"]+)"', html).group(1).replace("&amp;", "&")
        resp = staff_client.get(link, HTTP_HX_REQUEST="true")
        assert resp.status_code == 200
        html = resp.content.decode()
        seen += _feed_ids(html)
    assert seen == [a.pk for a in made]  # every alert once, in order
    import base64
    import json

    for bad in ("garbage", [[1, 2], 1], [9, now.isoformat(), 1], [1, "9999-12-31T23:59:59-23:59", 1]):
        raw = bad if isinstance(bad, str) else base64.urlsafe_b64encode(json.dumps(bad).encode()).decode()
        resp = staff_client.get(f"/alerts/feed?cursor={raw}")
        assert resp.status_code == 400 and resp.json()["errors"][0]["field"] == "cursor", bad


def test_alerts_raised_together_are_one_expandable_row(staff_client):
    # Half past the previous hour: the group's four first sightings share a clock hour whatever the time
    # the test runs (minutes before the hour, they straddled two and the group split).
    now = timezone.now().replace(minute=30, second=0, microsecond=0) - timedelta(hours=1)
    group = [
        make_alert(
            entity_id=f"stu_g{i}", type="high_ib_call_frequency", first_seen=now - timedelta(minutes=i)
        )
        for i in range(4)
    ]
    single = make_alert(entity_id="stu_s", type="velocity_drop")
    html = staff_client.get("/").content.decode()
    assert html.count('class="alert-group') == 1
    assert '<span class="count">4</span> students: High IB call frequency' in html
    assert set(_feed_ids(html)) == {a.pk for a in group} | {single.pk}  # every alert row is still there
    assert "<details>" in html  # a warning group starts folded...
    for i in range(3):
        make_alert(entity_id=f"stu_c{i}", type="velocity_drop", severity="critical", first_seen=now)
    assert (
        "<details open>" in staff_client.get("/").content.decode()
    )  # ...a critical one never hides its rows


@pytest.mark.django_db
def test_first_session_success_counts_only_sessions_known_to_be_firsts(client, api_key, post, drain):
    from conftest import event

    auth = {"HTTP_AUTHORIZATION": f"Bearer {api_key}"}
    now = timezone.now()
    ok = event("session_completed", session_id="s1", student_id="stu_a", tutor_id="t", student_rating=5)
    bad = event(
        "session_completed", session_id="s2", student_id="stu_b", tutor_id="t", completed_successfully=False
    )
    post({"events": [ok, bad]})
    drain()
    # a fresh install: these may be anybody's next session, not their first
    assert client.get("/api/kpis?range=24h", **auth).json()["first_session_success_rate"] is None
    old = event("ib_call_logged", student_id="stu_z", timestamp=(now - timedelta(days=40)).isoformat())
    post(old)  # a month and more of our own data before them: now they are firsts
    drain()
    assert client.get("/api/kpis?range=24h", **auth).json()["first_session_success_rate"] == 0.5
