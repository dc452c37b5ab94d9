"""Routing, retries with backoff, dead letters and replay, claiming, isolation, and the path from
POST /api/ingest to a delivered message."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connections
from django.utils import timezone

from alerts.delivery import deliveries_due, deliveries_enqueue, deliveries_send_due, delivery_attempt
from alerts.models import Alert, AlertDelivery, NotificationChannel
from alerts.tasks import deliver_alert, send_due_deliveries
from alerts.tests.conftest import WebhookPeer
from conftest import (
    READING_CRITICAL,
    READING_WARNING,
    READING_WARNING_LOWER,
    event,
    platform_reading,
    watched_student,
)

pytestmark = pytest.mark.django_db

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def sweep() -> dict[str, int]:
    return deliveries_send_due(now=timezone.now())


def health(post, drain, capture, score, student="stu_1"):
    """A platform reading through the public API for a student IOps has watched for weeks (usually read
    85), processed as the worker would, after-commit hooks run."""
    with capture(execute=True):
        platform_reading(post, drain, score, student=student)


# --- routing ------------------------------------------------------------------------------------


def test_routing_by_minimum_severity_and_alert_types(make_channel, make_alert):
    critical_only = make_channel("email", min_severity="critical")
    warnings_up = make_channel("email", min_severity="warning")
    imbalance_only = make_channel("email", min_severity="info", alert_types=["supply_demand_imbalance"])
    make_channel("email", min_severity="info", enabled=False)
    crit = make_alert(severity="critical", entity_id="stu_a")
    warn = make_alert(severity="warning", entity_id="stu_b")
    info_imbalance = make_alert(
        type="supply_demand_imbalance",
        severity="info",
        entity_type="subject_region",
        entity_id="Physics|west",
    )
    velocity = make_alert(type="velocity_drop", severity="warning", entity_id="stu_c")

    deliveries_enqueue(alert_ids=[crit.pk, warn.pk, info_imbalance.pk, velocity.pk], now=timezone.now())

    routed = set(AlertDelivery.objects.values_list("alert_id", "channel_id"))
    assert routed == {
        (crit.pk, critical_only.pk),
        (crit.pk, warnings_up.pk),
        (warn.pk, warnings_up.pk),
        (velocity.pk, warnings_up.pk),
        (info_imbalance.pk, imbalance_only.pk),
    }
    assert set(AlertDelivery.objects.values_list("status", "attempts")) == {("pending", 0)}


def test_enqueueing_the_same_trigger_twice_creates_one_delivery(make_channel, make_alert):
    make_channel("email")
    alert = make_alert()
    now = timezone.now()
    deliveries_enqueue(alert_ids=[alert.pk], now=now)
    deliveries_enqueue(alert_ids=[alert.pk, alert.pk], now=now)
    assert AlertDelivery.objects.count() == 1


def test_new_and_escalated_alerts_are_routed_repeats_are_not(
    post, drain, django_capture_on_commit_callbacks, make_channel
):
    warnings_up = make_channel("email", min_severity="warning")
    critical_only = make_channel("email", min_severity="critical")

    health(post, drain, django_capture_on_commit_callbacks, READING_WARNING)  # opens a warning
    alert = Alert.objects.get(type="low_health_score")
    assert list(AlertDelivery.objects.values_list("channel_id", "severity", "trigger")) == [
        (warnings_up.pk, "warning", "opened")
    ]

    health(
        post, drain, django_capture_on_commit_callbacks, READING_WARNING_LOWER
    )  # a repeat: nobody is told again (inside the tick it is not even counted)
    assert AlertDelivery.objects.count() == 1

    health(post, drain, django_capture_on_commit_callbacks, READING_CRITICAL)  # escalates to critical
    alert.refresh_from_db()
    assert alert.severity == "critical" and alert.occurrences == 2
    assert set(AlertDelivery.objects.filter(severity="critical").values_list("channel_id", "trigger")) == {
        (warnings_up.pk, "escalated"),
        (critical_only.pk, "escalated"),
    }


# --- retries, dead letters, replay ---------------------------------------------------------------


def test_transient_failures_back_off_exponentially_then_succeed(
    settings, webhook_peer, make_channel, make_alert
):
    settings.ALERT_DELIVERY_BACKOFF_SECONDS = 10
    webhook_peer.fail_next = 2
    make_channel("webhook", config={"url": webhook_peer.url})
    with time_machine.travel(START, tick=False) as clock:
        deliveries_enqueue(alert_ids=[make_alert().pk], now=timezone.now())

        assert sweep() == {"failed": 1}
        delivery = AlertDelivery.objects.get()
        assert delivery.attempts == 1 and delivery.last_error == "webhook answered HTTP 500"
        first_wait = delivery.next_attempt_at - START
        assert timedelta(seconds=5) <= first_wait <= timedelta(seconds=10)

        clock.move_to(delivery.next_attempt_at - timedelta(seconds=1))
        assert sweep() == {}  # not due yet

        clock.move_to(delivery.next_attempt_at)
        assert sweep() == {"failed": 1}
        delivery.refresh_from_db()
        second_wait = delivery.next_attempt_at - timezone.now()
        assert delivery.attempts == 2 and timedelta(seconds=10) <= second_wait <= timedelta(seconds=20)

        clock.move_to(delivery.next_attempt_at)
        assert sweep() == {"sent": 1}
        delivery.refresh_from_db()
        assert delivery.status == "sent" and delivery.attempts == 3 and delivery.sent_at == timezone.now()
        assert delivery.last_error == "" and delivery.next_attempt_at is None

        clock.shift(timedelta(hours=2))
        assert sweep() == {}
    assert webhook_peer.requests == 3 and len(webhook_peer.received) == 1


def test_a_peer_that_keeps_failing_becomes_a_dead_letter_after_max_attempts(
    settings, webhook_peer, make_channel, make_alert
):
    settings.ALERT_DELIVERY_MAX_ATTEMPTS = 4
    webhook_peer.fail_next = 100
    webhook_peer.fail_status = 503
    make_channel("webhook", config={"url": webhook_peer.url})
    with time_machine.travel(START, tick=False) as clock:
        deliveries_enqueue(alert_ids=[make_alert().pk], now=timezone.now())
        outcomes = []
        for _ in range(4):
            outcomes.append(sweep())
            delivery = AlertDelivery.objects.get()
            if delivery.next_attempt_at:
                clock.move_to(delivery.next_attempt_at)
        assert outcomes == [{"failed": 1}] * 3 + [{"dead": 1}]
        delivery = AlertDelivery.objects.get()
        assert delivery.status == "dead" and delivery.attempts == 4 and delivery.dead_at == timezone.now()
        assert delivery.next_attempt_at is None and delivery.last_error == "webhook answered HTTP 503"
        clock.shift(timedelta(days=1))
        assert sweep() == {}
    assert webhook_peer.requests == 4


def test_a_permanent_error_is_a_dead_letter_at_once(webhook_peer, make_channel, make_alert):
    webhook_peer.fail_next = 1
    webhook_peer.fail_status = 410
    make_channel("webhook", config={"url": webhook_peer.url})
    deliveries_enqueue(alert_ids=[make_alert().pk], now=timezone.now())
    assert sweep() == {"dead": 1}
    assert AlertDelivery.objects.get().attempts == 1


def test_a_channel_disabled_after_routing_dead_letters_its_deliveries(make_channel, make_alert, mailoutbox):
    channel = make_channel("email")
    deliveries_enqueue(alert_ids=[make_alert().pk], now=timezone.now())
    NotificationChannel.objects.filter(pk=channel.pk).update(enabled=False)
    assert sweep() == {"dead": 1}
    assert "disabled" in AlertDelivery.objects.get().last_error and mailoutbox == []


def test_dead_letters_are_mirrored_to_the_sqs_queue(settings, aws, sqs_queue, make_channel, make_alert):
    queue_url, _, read = sqs_queue
    settings.ALERT_DLQ_SQS_URL = queue_url
    channel = make_channel("sns", config={"topic_arn": "arn:aws:sns:us-east-1:123456789012:gone"})
    alert = make_alert()
    deliveries_enqueue(alert_ids=[alert.pk], now=timezone.now())
    assert sweep() == {"dead": 1}
    [letter] = read()
    assert letter["alert_id"] == alert.pk and letter["channel"] == channel.name
    assert letter["channel_kind"] == "sns" and "NotFound" in letter["error"] and letter["attempts"] == 1


def test_replay_from_the_admin_sends_a_dead_letter_again(
    admin_client, webhook_peer, make_channel, make_alert
):
    webhook_peer.fail_next = 1
    webhook_peer.fail_status = 404
    make_channel("webhook", config={"url": webhook_peer.url})
    deliveries_enqueue(alert_ids=[make_alert().pk], now=timezone.now())
    sweep()
    dead = AlertDelivery.objects.get()
    assert dead.status == "dead"

    listing = admin_client.get("/admin/alerts/alertdeadletter/?channel__kind=webhook")
    assert listing.status_code == 200 and "webhook answered HTTP 404" in listing.content.decode()
    assert admin_client.get("/admin/alerts/alertdelivery/?status=dead").status_code == 200

    resp = admin_client.post(
        "/admin/alerts/alertdeadletter/", {"action": "replay", "_selected_action": [dead.pk]}, follow=True
    )
    assert "Replaying 1 delivery" in resp.content.decode()
    dead.refresh_from_db()
    assert dead.status == "pending" and dead.attempts == 0 and dead.next_attempt_at <= timezone.now()
    assert dead.last_error == "webhook answered HTTP 404"  # kept until the next attempt tells otherwise

    assert sweep() == {"sent": 1}
    assert len(webhook_peer.received) == 1
    assert admin_client.get("/admin/alerts/alertdeadletter/").content.decode().count("HTTP 404") == 0


# --- claiming and isolation ------------------------------------------------------------------------


def test_two_sweeps_that_saw_the_same_row_send_it_once(webhook_peer, make_channel, make_alert):
    make_channel("webhook", config={"url": webhook_peer.url})
    deliveries_enqueue(alert_ids=[make_alert().pk], now=timezone.now())
    now = timezone.now()
    seen_by_a = deliveries_due(now=now, limit=10)
    seen_by_b = deliveries_due(now=now, limit=10)
    assert seen_by_a == seen_by_b and len(seen_by_a) == 1
    outcomes = [delivery_attempt(delivery_id=d, now=now) for d, *_ in seen_by_a + seen_by_b]
    assert outcomes == ["sent", None]
    assert len(webhook_peer.received) == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_sweeps_never_double_send(make_channel, make_alert):
    with WebhookPeer() as peer:
        make_channel("webhook", config={"url": peer.url})
        alerts = [make_alert(entity_id=f"stu_{i}") for i in range(12)]
        deliveries_enqueue(alert_ids=[a.pk for a in alerts], now=timezone.now())
        barrier = threading.Barrier(3)
        results: list[dict] = []

        def worker():
            try:
                barrier.wait(timeout=10)
                results.append(deliveries_send_due(now=timezone.now()))
            finally:
                connections.close_all()  # this thread's connection, so the test database can be dropped

        threads = [threading.Thread(target=worker) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        # raised together, they go as group messages (however the sweeps split the rows between them)
        delivered = sorted(
            a["alert_id"] for r in peer.received for a in r["body"].get("alerts") or [r["body"]]
        )
    assert delivered == sorted(a.pk for a in alerts)  # every alert exactly once
    assert sum(r.get("sent", 0) for r in results) == 12
    assert set(AlertDelivery.objects.values_list("status", "attempts")) == {("sent", 1)}


def test_a_failing_channel_does_not_hold_up_the_others(settings, make_channel, make_alert, mailoutbox):
    settings.ALERT_WEBHOOK_TIMEOUT_SECONDS = 0.2
    with WebhookPeer() as stuck, WebhookPeer() as healthy:
        stuck.delay = 1.0
        stuck_channel = make_channel("webhook", name="stuck", config={"url": stuck.url})
        make_channel("webhook", name="healthy", config={"url": healthy.url})
        make_channel("email", name="mail")
        kinds = ("low_health_score", "high_ib_call_frequency", "velocity_drop")  # three messages, not a group
        alerts = [make_alert(entity_id=f"stu_{i}", type=kind) for i, kind in enumerate(kinds)]
        deliveries_enqueue(alert_ids=[a.pk for a in alerts], now=timezone.now())

        outcome = sweep()

        assert len(healthy.received) == 3 and len(mailoutbox) == 3
    # the stuck endpoint cost one timeout; its other two deliveries wait for the next sweep untouched
    assert outcome == {"sent": 6, "failed": 1, "deferred": 2}
    stuck_rows = AlertDelivery.objects.filter(channel=stuck_channel)
    assert sorted(stuck_rows.values_list("status", "attempts")) == [
        ("failed", 1),
        ("pending", 0),
        ("pending", 0),
    ]


def test_a_broken_channel_row_never_breaks_event_processing(
    post, drain, django_capture_on_commit_callbacks, make_channel, caplog
):
    channel = make_channel("email")
    NotificationChannel.objects.filter(pk=channel.pk).update(min_severity="purple")  # corrupt by hand
    health(post, drain, django_capture_on_commit_callbacks, 30)
    assert Alert.objects.filter(type="low_health_score", severity="critical").exists()
    assert not AlertDelivery.objects.exists()
    assert "alert deliveries not enqueued" in caplog.text


def test_deliveries_commit_with_the_batch_so_a_crash_after_commit_loses_none(
    post, drain, django_capture_on_commit_callbacks, make_channel
):
    """The outbox: the delivery rows are written in the batch's transaction. Here the after-commit
    hooks never run (the process died right after the commit) and the delivery is still pending."""
    channel = make_channel("email")
    watched_student(post, drain)
    assert post(event("customer_health_update", student_id="stu_1", health_score=30)).status_code == 202
    with django_capture_on_commit_callbacks(execute=False) as hooks:
        drain()
    assert hooks  # there were after-commit hooks (insights, push); none of them ran
    alert = Alert.objects.get(type="low_health_score")
    assert list(AlertDelivery.objects.values_list("alert_id", "channel_id", "status")) == [
        (alert.pk, channel.pk, "pending")
    ]


# --- Celery tasks -----------------------------------------------------------------------------------


def test_deliver_alert_task_sends_once(webhook_peer, make_channel, make_alert):
    make_channel("webhook", config={"url": webhook_peer.url})
    [delivery_id] = deliveries_enqueue(alert_ids=[make_alert().pk], now=timezone.now())
    assert deliver_alert.delay(delivery_id).get() == "sent"
    assert deliver_alert.delay(delivery_id).get() is None
    assert send_due_deliveries.delay().get() == {}
    assert len(webhook_peer.received) == 1


# --- end to end -----------------------------------------------------------------------------------------


def test_from_ingest_to_delivered_message_embedded(
    post, drain, django_capture_on_commit_callbacks, make_channel, webhook_peer, mailoutbox, settings
):
    """Embedded mode: the pipeline only writes delivery rows; the sweep thread sends them."""
    settings.PUBLIC_BASE_URL = "http://iops.test"
    assert settings.CELERY_TASK_ALWAYS_EAGER
    mail = make_channel("email", min_severity="critical", config={"recipients": ["oncall@example.com"]})
    hook = make_channel("webhook", min_severity="warning", config={"url": webhook_peer.url})
    make_channel("email", alert_types=["supply_demand_imbalance"])  # not interested in health

    health(post, drain, django_capture_on_commit_callbacks, 30, student="stu_9")

    alert = Alert.objects.get(type="low_health_score", entity_id="stu_9")
    rows = AlertDelivery.objects.filter(alert=alert)
    assert sorted(rows.values_list("channel_id", "status")) == sorted(
        [(mail.pk, "pending"), (hook.pk, "pending")]
    )
    assert mailoutbox == [] and webhook_peer.received == []  # nothing sent from the worker thread

    assert send_due_deliveries.delay().get() == {"sent": 2}

    [email] = mailoutbox
    assert email.to == ["oncall@example.com"] and "health 40" in email.subject
    assert "http://iops.test/entities/student/stu_9" in email.body
    [request] = webhook_peer.received
    body = request["body"]
    assert body["type"] == "low_health_score" and body["severity"] == "critical"
    assert body["entity"] == {"type": "student", "id": "stu_9"}
    assert body["details"]["platform_health_score"] == 30
    assert body["url"] == "http://iops.test/entities/student/stu_9"
    assert json.loads(json.dumps(body)) == body


@pytest.mark.django_db(transaction=True)
def test_production_fast_path_a_celery_worker_sends_right_after_commit(
    post, drain, django_capture_on_commit_callbacks, make_channel, webhook_peer, settings
):
    """With a broker (eager mode off) each new delivery is queued as a task after commit and a worker
    sends it at once, without waiting for the sweep."""
    from celery.contrib.testing.worker import start_worker

    from iops.celery import app

    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.CELERY_WORKER_HIJACK_ROOT_LOGGER = False
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"polling_interval": 0.05}
    settings.IOPS_CONSUME_IN_CELERY = False  # this worker runs tasks only; drain() plays the consumer
    make_channel("webhook", config={"url": webhook_peer.url})

    # The embedded worker stops within ~4 s (Celery's synloop polls the memory broker every 2 s).
    with start_worker(app, perform_ping_check=False, shutdown_timeout=30):
        health(post, drain, django_capture_on_commit_callbacks, READING_CRITICAL)
        deadline = time.monotonic() + 20
        while not webhook_peer.received and time.monotonic() < deadline:
            time.sleep(0.05)  # bounded wait on real I/O: the worker thread and the HTTP peer

    assert AlertDelivery.objects.get().status == "sent" and len(webhook_peer.received) == 1
    assert sweep() == {}


# --- where the sweep runs ------------------------------------------------------------------------------


def test_beat_runs_the_delivery_sweep():
    from iops.celery import app

    entry = app.conf.beat_schedule["send-due-alert-deliveries"]
    assert entry["task"] == send_due_deliveries.name and entry["schedule"] <= 10
    assert entry["task"] in app.tasks  # registered under that name, so beat can find it


@pytest.mark.django_db(transaction=True)
def test_the_embedded_sweep_thread_of_serve_sends_due_deliveries(settings, make_channel, make_alert):
    from iops.management.commands.serve import _periodic, beat_entries

    assert ("alerts.send_due_deliveries", 5.0) in beat_entries()  # serve runs every beat entry
    with WebhookPeer() as peer:
        make_channel("webhook", config={"url": peer.url})
        deliveries_enqueue(alert_ids=[make_alert().pk], now=timezone.now())
        stop = threading.Event()

        def run():
            try:
                _periodic(stop, "alerts.send_due_deliveries", 0.05)
            finally:
                connections.close_all()

        thread = threading.Thread(target=run)
        thread.start()
        try:
            deadline = time.monotonic() + 10
            while not peer.received and time.monotonic() < deadline:
                time.sleep(0.05)  # bounded wait on the thread and the HTTP peer
        finally:
            stop.set()
            thread.join(timeout=10)
        assert len(peer.received) == 1
    assert AlertDelivery.objects.get().status == "sent"


# --- groups ------------------------------------------------------------------------------------------


def test_alerts_raised_together_go_as_one_message_per_channel(
    webhook_peer, make_channel, make_alert, mailoutbox
):
    make_channel("webhook", config={"url": webhook_peer.url})
    make_channel("email", name="mail", config={"recipients": ["ops@example.com"]})
    group = [make_alert(entity_id=f"stu_{i}", type="high_ib_call_frequency") for i in range(4)]
    other = make_alert(entity_id="stu_x", type="velocity_drop")
    deliveries_enqueue(alert_ids=[a.pk for a in [*group, other]], now=timezone.now())
    assert sweep() == {"sent": 10}  # every row sent...
    assert len(webhook_peer.received) == 2 and len(mailoutbox) == 2  # ...in two messages per channel
    body = next(r["body"] for r in webhook_peer.received if r["body"].get("group"))
    assert body["group"] == {"size": 4, "type": "high_ib_call_frequency", "severity": group[0].severity}
    assert sorted(a["alert_id"] for a in body["alerts"]) == sorted(a.pk for a in group)
    assert body["summary"] == "4 students: High IB call frequency"
    assert all(a["url"].endswith(f"/entities/student/{a['entity']['id']}") for a in body["alerts"])
    email = next(m for m in mailoutbox if "4 students" in m.subject)
    assert all(f"/entities/student/stu_{i}" in email.body for i in range(4))
    assert set(AlertDelivery.objects.values_list("status", "attempts")) == {("sent", 1)}


def test_two_alerts_of_a_kind_are_still_two_messages(webhook_peer, make_channel, make_alert):
    make_channel("webhook", config={"url": webhook_peer.url})
    alerts = [make_alert(entity_id=f"stu_{i}", type="high_ib_call_frequency") for i in range(2)]
    deliveries_enqueue(alert_ids=[a.pk for a in alerts], now=timezone.now())
    assert sweep() == {"sent": 2}
    assert sorted(r["body"]["alert_id"] for r in webhook_peer.received) == sorted(a.pk for a in alerts)
    assert not any(r["body"].get("group") for r in webhook_peer.received)


def test_a_group_that_fails_is_retried_together(settings, webhook_peer, make_channel, make_alert):
    settings.ALERT_DELIVERY_BACKOFF_SECONDS = 10
    webhook_peer.fail_next = 1
    make_channel("webhook", config={"url": webhook_peer.url})
    alerts = [make_alert(entity_id=f"stu_{i}", type="high_ib_call_frequency") for i in range(3)]
    with time_machine.travel(START, tick=False):
        deliveries_enqueue(alert_ids=[a.pk for a in alerts], now=START)
        assert sweep() == {"failed": 3}
    with time_machine.travel(START + timedelta(minutes=1), tick=False):
        assert sweep() == {"sent": 3}
    assert len(webhook_peer.received) == 1 and webhook_peer.received[0]["body"]["group"]["size"] == 3
