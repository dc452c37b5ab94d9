"""Digests (issue 19): a channel's low-severity alerts wait for one message per period, sent by the
periodic task to a real local webhook peer, claimed so that it is sent once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from alerts.delivery import deliveries_enqueue, deliveries_send_due
from alerts.digests import digest_send, digests_send_due
from alerts.models import AlertDelivery
from alerts.tasks import send_digests

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 2, 9, 20, tzinfo=UTC)


@pytest.fixture
def digest_channel(make_channel, webhook_peer, settings):
    settings.PUBLIC_BASE_URL = "https://ops.example.com"
    return make_channel(
        "webhook", config={"url": webhook_peer.url}, digest="hourly", digest_max_severity="info"
    )


def raise_alerts(make_alert, now):
    kw = {"severity": "info", "now": now}
    alerts = [
        make_alert(type="velocity_drop", entity_id="stu_1", **kw),
        make_alert(type="velocity_drop", entity_id="stu_2", **kw),
        make_alert(type="first_session_failed", entity_id="stu_3", **kw),
    ]
    deliveries_enqueue(alert_ids=[a.pk for a in alerts], now=now)
    return alerts


def test_low_severity_waits_for_one_hourly_message_grouped_by_type(digest_channel, make_alert, webhook_peer):
    alerts = raise_alerts(make_alert, T0)
    urgent = make_alert(severity="warning", entity_id="stu_9", now=T0)
    deliveries_enqueue(alert_ids=[urgent.pk], now=T0)

    # The ordinary sweep sends the warning at once and leaves the info alerts for the digest.
    assert deliveries_send_due(now=T0) == {"sent": 1}
    assert [r["body"]["alert_id"] for r in webhook_peer.received] == [urgent.pk]
    assert set(AlertDelivery.objects.filter(alert__in=alerts).values_list("status", flat=True)) == {"digest"}
    # Not before the hour has ended.
    assert digests_send_due(now=T0 + timedelta(minutes=30)) == {}

    assert digests_send_due(now=datetime(2026, 3, 2, 10, 0, 5, tzinfo=UTC)) == {"sent": 3}
    assert len(webhook_peer.received) == 2
    digest = webhook_peer.received[1]["body"]
    assert digest["trigger"] == "digest" and digest["digest"]["period"] == "hourly"
    assert digest["digest"]["size"] == 3 and digest["severity"] == "info"
    groups = {g["type"]: g for g in digest["groups"]}
    assert [g["type"] for g in digest["groups"]] == ["velocity_drop", "first_session_failed"]
    assert [a["alert_id"] for a in groups["velocity_drop"]["alerts"]] == [alerts[0].pk, alerts[1].pk]
    assert (
        groups["first_session_failed"]["alerts"][0]["url"] == f"https://ops.example.com/alerts/{alerts[2].pk}"
    )
    assert set(AlertDelivery.objects.filter(alert__in=alerts).values_list("status", flat=True)) == {"sent"}

    # Sent once: a second run (or another worker) finds nothing to claim.
    assert digests_send_due(now=datetime(2026, 3, 2, 10, 5, tzinfo=UTC)) == {}
    assert len(webhook_peer.received) == 2


def test_a_row_claimed_by_one_worker_is_not_sent_by_another(digest_channel, make_alert, webhook_peer):
    alerts = raise_alerts(make_alert, T0)
    ids = list(AlertDelivery.objects.filter(alert__in=alerts).values_list("pk", flat=True))
    later = datetime(2026, 3, 2, 10, 1, tzinfo=UTC)
    first = digest_send(delivery_ids=ids, now=later)
    second = digest_send(delivery_ids=ids, now=later)
    assert first == ("sent", 3) and second == (None, 0)
    assert len(webhook_peer.received) == 1


def test_a_failed_digest_is_retried_as_one_message(digest_channel, make_alert, webhook_peer):
    alerts = raise_alerts(make_alert, T0)
    webhook_peer.fail_next = 1
    at = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    assert digests_send_due(now=at) == {"failed": 3}
    rows = AlertDelivery.objects.filter(alert__in=alerts)
    assert set(rows.values_list("status", flat=True)) == {"digest"}
    assert all("HTTP 500" in r.last_error and r.next_attempt_at > at for r in rows)
    # The ordinary sweep never sends them one by one.
    assert deliveries_send_due(now=at + timedelta(hours=1)) == {}
    assert digests_send_due(now=at + timedelta(hours=1)) == {"sent": 3}
    assert len(webhook_peer.received) == 1 and webhook_peer.received[0]["body"]["digest"]["size"] == 3


def test_a_silence_made_while_rows_wait_keeps_them_out_of_the_digest(
    digest_channel, make_alert, webhook_peer
):
    from alerts.silences import silence_create

    alerts = raise_alerts(make_alert, T0)
    silence_create(alert_type="velocity_drop", ends_at=T0 + timedelta(days=1), reason="known", now=T0)
    assert digests_send_due(now=datetime(2026, 3, 2, 10, 0, tzinfo=UTC)) == {"sent": 1}
    body = webhook_peer.received[0]["body"]
    assert [g["type"] for g in body["groups"]] == ["first_session_failed"] and body["digest"]["size"] == 1
    statuses = dict(AlertDelivery.objects.values_list("alert_id", "status"))
    assert statuses == {alerts[0].pk: "silenced", alerts[1].pk: "silenced", alerts[2].pk: "sent"}


def test_a_daily_digest_goes_after_midnight_utc(make_channel, make_alert, webhook_peer):
    make_channel("webhook", config={"url": webhook_peer.url}, digest="daily", digest_max_severity="warning")
    warn = make_alert(severity="warning", entity_id="stu_w", now=T0)
    crit = make_alert(severity="critical", entity_id="stu_c", now=T0)
    deliveries_enqueue(alert_ids=[warn.pk, crit.pk], now=T0)
    assert deliveries_send_due(now=T0) == {"sent": 1}  # critical is above the digest's severity
    assert digests_send_due(now=datetime(2026, 3, 2, 23, 59, tzinfo=UTC)) == {}
    assert digests_send_due(now=datetime(2026, 3, 3, 0, 0, 1, tzinfo=UTC)) == {"sent": 1}
    assert webhook_peer.received[-1]["body"]["groups"][0]["alerts"][0]["alert_id"] == warn.pk


def test_the_beat_task_sends_due_digests(digest_channel, make_alert, webhook_peer):
    raise_alerts(make_alert, timezone.now() - timedelta(hours=2))
    assert send_digests.delay().get() == {"sent": 3}
    assert len(webhook_peer.received) == 1


def test_send_digests_is_scheduled_in_beat_and_embedded():
    from iops.management.commands.serve import beat_entries

    assert ("alerts.send_digests", 60.0) in beat_entries()


def test_channels_default_to_no_digest(make_channel, make_alert, webhook_peer):
    channel = make_channel("webhook", config={"url": webhook_peer.url})
    assert channel.digest == "off"
    alert = make_alert(severity="info")
    deliveries_enqueue(alert_ids=[alert.pk], now=timezone.now())
    assert deliveries_send_due(now=timezone.now()) == {"sent": 1}


def test_admin_sets_a_channels_digest(client, django_user_model, make_channel):
    channel = make_channel("email")
    admin_user = django_user_model.objects.create_superuser("root", "r@example.com", "root-pass-123")
    client.force_login(admin_user)
    resp = client.post(
        f"/admin/alerts/notificationchannel/{channel.pk}/change/",
        {
            "name": channel.name,
            "kind": "email",
            "enabled": "on",
            "min_severity": "info",
            "alert_types": "[]",
            "digest": "daily",
            "digest_max_severity": "warning",
            "config": '{"recipients": ["ops@example.com"]}',
            "secret": "",
        },
    )
    assert resp.status_code == 302, resp.content.decode()[-2000:]
    channel.refresh_from_db()
    assert (channel.digest, channel.digest_max_severity) == ("daily", "warning")
    assert channel.name in client.get("/admin/alerts/notificationchannel/?digest=daily").content.decode()
    assert channel.name not in client.get("/admin/alerts/notificationchannel/?digest=hourly").content.decode()


def test_an_email_digest_lists_each_type_with_links(make_channel, make_alert, settings, mailoutbox):
    settings.PUBLIC_BASE_URL = "https://ops.example.com"
    make_channel("email", digest="hourly")
    alerts = raise_alerts(make_alert, T0)
    assert digests_send_due(now=datetime(2026, 3, 2, 10, 0, tzinfo=UTC)) == {"sent": 3}
    assert len(mailoutbox) == 1
    mail = mailoutbox[0]
    assert mail.subject == "[IOps] INFO: 3 alerts raised in the last hour (digest)"
    assert "Session velocity drop (2)" in mail.body and "First session failed (1)" in mail.body
    for alert in alerts:
        assert f"https://ops.example.com/alerts/{alert.pk}" in mail.body


@pytest.mark.django_db(transaction=True)
def test_concurrent_digest_runs_send_each_row_once(make_channel, make_alert):
    from alerts.tests.conftest import WebhookPeer
    from conftest import race

    with WebhookPeer() as peer:
        make_channel("webhook", config={"url": peer.url}, digest="hourly")
        raise_alerts(make_alert, T0)
        results: list[dict] = []
        at = datetime(2026, 3, 2, 10, 0, 1, tzinfo=UTC)
        race(*[lambda: results.append(digests_send_due(now=at)) for _ in range(3)])
        listed = [a["alert_id"] for r in peer.received for g in r["body"]["groups"] for a in g["alerts"]]
        assert sorted(listed) == sorted(set(listed)) and len(listed) == 3
        assert len(peer.received) == 1  # one period, one message: the runs that lost the channel skip it
        assert sum(r.get("sent", 0) for r in results) == 3
        assert set(AlertDelivery.objects.values_list("status", flat=True)) == {"sent"}
