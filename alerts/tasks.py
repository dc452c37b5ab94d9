"""Celery interface of alert delivery: thin, ids in, counts out. No Celery retries: the delivery row's
next_attempt_at and the periodic sweep are the one retry layer."""

from celery import shared_task
from django.utils import timezone

from alerts.delivery import deliveries_attempt, deliveries_send_due, delivery_attempt


@shared_task(name="alerts.deliver_alert", ignore_result=True)
def deliver_alert(delivery_id: int) -> str | None:
    """Fast path: send one new delivery now (a no-op if the sweep or another worker already has it)."""
    return delivery_attempt(delivery_id=delivery_id, now=timezone.now())


@shared_task(name="alerts.deliver_alerts", ignore_result=True)
def deliver_alerts(delivery_ids: list[int]) -> str | None:
    """Fast path for a group (alerts of one type and severity raised together): one message for all."""
    return deliveries_attempt(delivery_ids=delivery_ids, now=timezone.now())


@shared_task(name="alerts.send_due_deliveries", ignore_result=True)
def send_due_deliveries(limit: int = 200) -> dict[str, int]:
    """Beat, every ALERT_DELIVERY_SWEEP_SECONDS: first attempts the fast path missed, and the retries."""
    return deliveries_send_due(now=timezone.now(), limit=limit)


@shared_task(name="alerts.send_digests", ignore_result=True)
def send_digests() -> dict[str, int]:
    """Beat, every minute: each digest channel's message for the period that ended."""
    from alerts.digests import digests_send_due

    return digests_send_due(now=timezone.now())
