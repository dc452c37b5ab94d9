"""Each channel kind against a real peer: SNS and EventBridge in moto server mode (read back from SQS),
the webhook against a local server that checks the signature, e-mail through Django's outbox."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from alerts.delivery import deliveries_enqueue, deliveries_send_due
from alerts.models import AlertDelivery, NotificationChannel
from alerts.notifiers import NOTIFIERS, webhook_signature
from alerts.tests.conftest import WEBHOOK_SECRET

pytestmark = pytest.mark.django_db


def deliver(alert, now=None) -> AlertDelivery:
    """Route one alert and run one sweep; returns its (single) delivery."""
    now = now or timezone.now()
    deliveries_enqueue(alert_ids=[alert.pk], now=now)
    deliveries_send_due(now=now)
    return AlertDelivery.objects.get(alert=alert)


def make_insight(alert=None, *, entity_id="stu_1", scored_at=None, level="high"):
    from insights.models import Insight

    return Insight.objects.create(
        entity_type="student",
        entity_id=entity_id,
        alert_id=alert.pk if alert else None,
        risk=0.81,
        level=level,
        explanation="Health fell from 85 to 42 after three support calls.",
        recommendations=["Call the student this week", "Offer a different tutor"],
        drivers=[{"feature": "health", "value": 42, "contribution": 0.4}],
        model="local-v1",
        scored_at=scored_at or timezone.now(),
    )


def test_channel_kinds_come_from_the_notifier_registry():
    field = NotificationChannel._meta.get_field("kind")
    assert (
        [value for value, _ in field.choices] == list(NOTIFIERS) == ["email", "sns", "eventbridge", "webhook"]
    )


# --- SNS ----------------------------------------------------------------------------------------


def test_sns_message_reaches_a_subscribed_sqs_queue_with_attributes_and_link(
    aws, sqs_queue, make_channel, make_alert, settings
):
    settings.PUBLIC_BASE_URL = "https://iops.example.com"
    queue_url, queue_arn, read = sqs_queue
    sns = aws("sns")
    topic = sns.create_topic(Name=f"iops-critical-{uuid.uuid4().hex[:8]}")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    make_channel("sns", config={"topic_arn": topic}, min_severity="critical")
    alert = make_alert(severity="critical", entity_id="stu_42")
    make_insight(alert, entity_id="stu_42")

    delivery = deliver(alert)

    assert delivery.status == "sent" and delivery.attempts == 1 and delivery.duration_ms is not None
    [envelope] = read()
    assert envelope["Subject"].startswith("[IOps] CRITICAL: Student stu_42 health 42")
    assert envelope["MessageAttributes"]["severity"]["Value"] == "critical"
    assert envelope["MessageAttributes"]["type"]["Value"] == "low_health_score"
    message = json.loads(envelope["Message"])
    assert message["type"] == "low_health_score" and message["severity"] == "critical"
    assert message["entity"] == {"type": "student", "id": "stu_42"}
    assert message["summary"] == alert.message and message["details"]["threshold"] == 50.0
    assert message["occurrences"] == 1 and message["first_seen"] == alert.first_seen.isoformat()
    assert message["url"] == "https://iops.example.com/entities/student/stu_42"
    assert message["insight"]["level"] == "high" and message["insight"]["risk"] == 0.81
    assert message["insight"]["recommendations"] == ["Call the student this week", "Offer a different tutor"]


def test_sns_unknown_topic_is_a_permanent_error_and_a_dead_letter_at_once(aws, make_channel, make_alert):
    make_channel("sns", config={"topic_arn": "arn:aws:sns:us-east-1:123456789012:no-such-topic"})
    delivery = deliver(make_alert())
    assert delivery.status == "dead" and delivery.attempts == 1
    assert "NotFound" in delivery.last_error


def test_aws_unreachable_is_transient(settings, monkeypatch, make_channel, make_alert):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, "testing")
    settings.AWS_ENDPOINT_URL = "http://127.0.0.1:9"  # nothing listens on the discard port
    make_channel("sns", config={"topic_arn": "arn:aws:sns:us-east-1:123456789012:t"})
    delivery = deliver(make_alert())
    assert delivery.status == "failed" and delivery.next_attempt_at > timezone.now()
    assert "sns unreachable" in delivery.last_error


# --- EventBridge ------------------------------------------------------------------------------


def test_eventbridge_event_reaches_a_rule_target_with_detail_type_and_source(
    aws, sqs_queue, make_channel, make_alert
):
    queue_url, queue_arn, read = sqs_queue
    events = aws("events")
    bus = f"iops-{uuid.uuid4().hex[:8]}"
    events.create_event_bus(Name=bus)
    events.put_rule(
        Name="iops-alerts", EventBusName=bus, EventPattern=json.dumps({"source": ["iops.alerts"]})
    )
    events.put_targets(Rule="iops-alerts", EventBusName=bus, Targets=[{"Id": "sqs", "Arn": queue_arn}])
    make_channel("eventbridge", config={"event_bus_name": bus})
    alert = make_alert(
        type="supply_demand_imbalance",
        severity="warning",
        entity_type="subject_region",
        entity_id="Computer Science|west",
        message="Computer Science / west: sustained high demand",
    )

    assert deliver(alert).status == "sent"

    [event] = read()
    assert event["detail-type"] == "supply_demand_imbalance" and event["source"] == "iops.alerts"
    assert event["detail"]["entity"] == {"type": "subject_region", "id": "Computer Science|west"}
    assert event["detail"]["url"].endswith("/entities/subject_region/Computer%20Science%7Cwest")
    assert event["detail"]["insight"] is None


def test_eventbridge_missing_bus_is_a_dead_letter(aws, make_channel, make_alert):
    make_channel("eventbridge", config={"event_bus_name": "no-such-bus", "source": "iops.alerts"})
    delivery = deliver(make_alert())
    assert delivery.status == "dead" and "ResourceNotFoundException" in delivery.last_error


# --- webhook ------------------------------------------------------------------------------------


def test_webhook_body_is_signed_and_verified_by_the_peer(webhook_peer, make_channel, make_alert):
    make_channel("webhook", config={"url": webhook_peer.url})
    alert = make_alert()

    delivery = deliver(alert)

    assert delivery.status == "sent"
    [request] = webhook_peer.received
    assert request["body"]["alert_id"] == alert.pk and request["body"]["delivery_id"] == delivery.pk
    assert request["headers"]["X-IOps-Delivery"] == str(delivery.pk)
    assert request["headers"]["X-IOps-Signature"].startswith("sha256=")
    assert abs(int(request["headers"]["X-IOps-Timestamp"]) - timezone.now().timestamp()) < 60


def test_webhook_signature_is_hmac_sha256_of_timestamp_and_raw_body():
    import hashlib
    import hmac

    body = b'{"a":1}'
    expected = hmac.new(b"k" * 16, b"1700000000." + body, hashlib.sha256).hexdigest()
    assert webhook_signature(secret="k" * 16, timestamp="1700000000", body=body) == f"sha256={expected}"


def test_webhook_with_the_wrong_secret_is_refused_by_the_peer_and_dead(
    webhook_peer, make_channel, make_alert
):
    make_channel("webhook", config={"url": webhook_peer.url}, secret="not-the-peer-secret-at-all")
    delivery = deliver(make_alert())
    assert delivery.status == "dead" and delivery.last_error == "webhook answered HTTP 401"
    assert webhook_peer.requests == 1 and webhook_peer.received == []


def test_webhook_timeout_is_transient_and_retried_later(webhook_peer, make_channel, make_alert, settings):
    settings.ALERT_WEBHOOK_TIMEOUT_SECONDS = 0.2
    webhook_peer.delay = 1.0
    make_channel("webhook", config={"url": webhook_peer.url})
    now = timezone.now()
    delivery = deliver(make_alert(), now=now)
    assert delivery.status == "failed" and "Timeout" in delivery.last_error
    assert delivery.next_attempt_at >= now + timedelta(seconds=settings.ALERT_DELIVERY_BACKOFF_SECONDS / 2)


# --- e-mail -------------------------------------------------------------------------------------


def test_email_goes_to_the_recipients_with_summary_insight_and_link(
    mailoutbox, make_channel, make_alert, settings
):
    settings.DEFAULT_FROM_EMAIL = "iops@example.com"
    make_channel("email", config={"recipients": ["ops@example.com", "lead@example.com"]})
    alert = make_alert(entity_id="stu_7")
    make_insight(entity_id="stu_7")  # not linked to the alert: the entity's latest, within a day

    assert deliver(alert).status == "sent"

    [email] = mailoutbox
    assert email.to == ["ops@example.com", "lead@example.com"] and email.from_email == "iops@example.com"
    assert email.subject == "[IOps] CRITICAL: Student stu_7 health 42 (below 50)"
    assert "Entity:      student stu_7" in email.body
    assert "/entities/student/stu_7" in email.body
    assert "Churn insight: high risk (0.81, local-v1)" in email.body
    assert "  - Call the student this week" in email.body


def test_an_insight_older_than_a_day_is_not_attached(mailoutbox, make_channel, make_alert):
    make_channel("email")
    make_insight(entity_id="stu_8", scored_at=timezone.now() - timedelta(days=2))
    deliver(make_alert(entity_id="stu_8"))
    assert "Churn insight" not in mailoutbox[0].body


# --- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "config", "secret", "complaint"),
    [
        ("email", {}, "", "recipients"),
        ("email", {"recipients": ["not-an-address"]}, "", "not an e-mail address"),
        ("sns", {"topic_arn": "my-topic"}, "", "topic_arn"),
        ("eventbridge", {}, "", "event_bus_name"),
        ("eventbridge", {"event_bus_name": "b", "source": "aws.events"}, "", "source"),
        ("webhook", {"url": "ftp://example.com"}, WEBHOOK_SECRET, "config.url"),
        ("webhook", {"url": "https://example.com/hook"}, "", "secret"),
    ],
)
def test_an_enabled_but_incomplete_channel_is_refused(kind, config, secret, complaint):
    channel = NotificationChannel(name="x", kind=kind, config=config, secret=secret, enabled=True)
    with pytest.raises(ValidationError) as exc:
        channel.full_clean()
    assert "enabled but incomplete" in str(exc.value) and complaint in str(exc.value)
    channel.enabled = False  # a disabled draft may be saved half-done
    channel.full_clean()


def test_unknown_alert_types_are_refused():
    channel = NotificationChannel(
        name="x", kind="email", config={"recipients": ["a@b.c"]}, alert_types=["low_health", "velocity_drop"]
    )
    with pytest.raises(ValidationError, match="unknown alert type"):
        channel.full_clean()


def test_admin_refuses_an_incomplete_channel_and_never_shows_the_secret(admin_client):
    resp = admin_client.post(
        "/admin/alerts/notificationchannel/add/",
        {
            "name": "hooks",
            "kind": "webhook",
            "enabled": "on",
            "min_severity": "warning",
            "alert_types": "[]",
            "config": '{"url": "https://hooks.example.com/iops"}',
            "secret": "",
        },
    )
    assert resp.status_code == 200 and not NotificationChannel.objects.exists()
    assert "enabled but incomplete" in resp.content.decode()

    resp = admin_client.post(
        "/admin/alerts/notificationchannel/add/",
        {
            "name": "hooks",
            "kind": "webhook",
            "enabled": "on",
            "min_severity": "warning",
            "alert_types": "[]",
            "config": '{"url": "https://hooks.example.com/iops"}',
            "generate_secret": "on",
        },
        follow=True,
    )
    channel = NotificationChannel.objects.get()
    assert len(channel.secret) >= 32
    assert f"New signing secret for hooks: {channel.secret}" in resp.content.decode()  # shown once
    page = admin_client.get(f"/admin/alerts/notificationchannel/{channel.pk}/change/").content.decode()
    assert channel.secret not in page and "A secret is set" in page
    listing = admin_client.get("/admin/alerts/notificationchannel/").content.decode()
    assert channel.secret not in listing

    # saving without typing a secret keeps the current one
    resp = admin_client.post(
        f"/admin/alerts/notificationchannel/{channel.pk}/change/",
        {
            "name": "hooks",
            "kind": "webhook",
            "enabled": "on",
            "min_severity": "critical",
            "alert_types": '["low_health_score"]',
            "config": '{"url": "https://hooks.example.com/iops"}',
            "secret": "",
        },
    )
    assert resp.status_code == 302
    updated = NotificationChannel.objects.get()
    assert updated.secret == channel.secret and updated.min_severity == "critical"


def test_admin_send_test_alert_action(admin_client, mailoutbox, make_channel, webhook_peer):
    email = make_channel(
        "email", name="Ops mail", config={"recipients": ["ops@example.com"]}, min_severity="warning"
    )
    hook = make_channel(
        "webhook", name="Partner hook", config={"url": webhook_peer.url}, secret="wrong-secret-for-this-peer"
    )
    resp = admin_client.post(
        "/admin/alerts/notificationchannel/",
        {"action": "send_test", "_selected_action": [email.pk, hook.pk]},
        follow=True,
    )
    page = resp.content.decode()
    assert "Ops mail: test alert sent." in page
    assert "Partner hook: test failed: webhook answered HTTP 401" in page
    assert mailoutbox[0].subject.startswith("[IOps TEST] WARNING: Test alert from IOps")
    assert not AlertDelivery.objects.exists()


def test_admin_enable_action_refuses_incomplete_channels(admin_client, make_channel):
    draft = make_channel("sns", name="Half done", enabled=False, config={})
    ready = make_channel("email", name="Ready", enabled=False)
    resp = admin_client.post(
        "/admin/alerts/notificationchannel/",
        {"action": "enable", "_selected_action": [draft.pk, ready.pk]},
        follow=True,
    )
    assert "Not enabled (incomplete config): Half done" in resp.content.decode()
    assert dict(NotificationChannel.objects.values_list("name", "enabled")) == {
        "Half done": False,
        "Ready": True,
    }
