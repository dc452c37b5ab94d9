"""Routing and delivery: one `AlertDelivery` row per (alert, channel, severity), sent with backoff.

The ONE retry layer is the row itself: `next_attempt_at` plus the periodic sweep
(`deliveries_send_due`). The Celery task `alerts.deliver_alert` is only a fast path for the first
attempt. Work is claimed with a conditional UPDATE, so two workers never send the same row twice,
and a channel that fails is skipped for the rest of a sweep, so it cannot hold the others up.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F

from alerts.messages import alert_message, group_message
from alerts.models import (
    Alert,
    AlertDelivery,
    AlertTransition,
    DeliveryStatus,
    EntityType,
    NotificationChannel,
    Status,
)
from alerts.notifiers import TransportError, dead_letter_mirror, notifier_for
from alerts.silences import silences_for

logger = logging.getLogger(__name__)

# Rows a worker may claim: never tried yet (or replayed), or failed with a retry scheduled.
CLAIMABLE = (DeliveryStatus.PENDING, DeliveryStatus.FAILED)


def _backoff(attempts: int) -> timedelta:
    """Exponential from the base, capped, with "equal jitter" (half fixed, half random)."""
    delay = min(
        settings.ALERT_DELIVERY_BACKOFF_SECONDS * 2 ** max(attempts - 1, 0),
        settings.ALERT_DELIVERY_BACKOFF_MAX_SECONDS,
    )
    return timedelta(seconds=delay / 2 + random.uniform(0, delay / 2))


def _lease() -> timedelta:
    """How long a claim holds a row: a worker that dies mid-send leaves it to be retried after this."""
    return timedelta(seconds=2 * settings.ALERT_WEBHOOK_TIMEOUT_SECONDS + 60)


# Deliveries to one channel of one alert type, severity and trigger, enqueued together (one batch or
# sweep raised them), go as one message once there are this many — one notification for a group, as
# Alertmanager groups by labels; the rows stay one per alert (retries, audit, dead letters).
GROUP_MIN = 3


def _groups(rows: Iterable[tuple]) -> list[list[int]]:
    """(id, channel, type, severity, trigger, created_at) rows → lists of ids sent as one message each,
    in the order of their first row."""
    by_key: dict[tuple, list[int]] = {}
    for pk, *key in rows:
        by_key.setdefault(tuple(key), []).append(pk)
    groups: list[list[int]] = []
    for ids in by_key.values():
        groups.extend([ids] if len(ids) >= GROUP_MIN else [[pk] for pk in ids])
    return sorted(groups, key=lambda g: g[0])


_GROUP_FIELDS = ("pk", "channel_id", "alert__type", "severity", "trigger", "created_at")


def send_guarded(send: Callable[[], object], *, delivery_ids: list[int]) -> TransportError | None:
    """Run one send; what went wrong as a TransportError (a notifier's own, or a crash wrapped so a bug
    in one notifier never crash-loops the sweep), None when it went out."""
    try:
        send()
    except TransportError as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - logged with its traceback, answered as a transport error
        logger.exception("notifier crashed", extra={"delivery_ids": delivery_ids})
        return TransportError(f"internal error: {exc.__class__.__name__}: {exc}")
    return None


def deliveries_dispatch(delivery_ids: list[int]) -> None:
    """Fast path for production: a Celery task per message (a group's rows in one task). Call after the
    rows are committed. Embedded mode runs Celery eagerly inside the stream worker thread; there the
    sweep thread sends instead, so a slow channel can never hold up event processing."""
    if not delivery_ids or settings.CELERY_TASK_ALWAYS_EAGER:
        return
    from alerts.tasks import deliver_alert, deliver_alerts

    for ids in _groups(AlertDelivery.objects.filter(pk__in=delivery_ids).values_list(*_GROUP_FIELDS)):
        try:
            if len(ids) == 1:
                deliver_alert.delay(ids[0])
            else:
                deliver_alerts.delay(ids)
        except Exception:  # noqa: BLE001 - broker down: the sweep sends it a few seconds later
            logger.warning("deliver_alert not queued; left to the sweep", extra={"delivery_ids": ids})
            return


def _schedule(delivery_ids: list[int]) -> None:
    if delivery_ids:
        transaction.on_commit(lambda: deliveries_dispatch(delivery_ids))


def _row(
    alert: Alert, channel: NotificationChannel, silence, *, now: datetime, escalated: bool
) -> AlertDelivery:
    """A new delivery: pending (due now), silenced (never sent; the row says which silence), or waiting
    for the channel's digest (due when its period ends, alerts/digests.py)."""
    row = AlertDelivery(
        alert=alert,
        channel=channel,
        severity=alert.severity,
        trigger="escalated" if escalated else "opened",
        status=DeliveryStatus.PENDING,
        next_attempt_at=now,
        created_at=now,
    )
    if silence is not None:
        row.status, row.silence, row.next_attempt_at = DeliveryStatus.SILENCED, silence, None
        row.last_error = f"silenced by silence {silence.pk}: {silence.reason}"[:2000]
    elif channel.digests(severity=alert.severity):
        row.status, row.next_attempt_at = DeliveryStatus.DIGEST, channel.digest_due(now=now)
    return row


def deliveries_silence(deliveries: list[AlertDelivery], *, now: datetime) -> list[AlertDelivery]:
    """Claimed rows whose alert a silence now mutes (one created after they were enqueued) are marked
    silenced and left out; the rest are returned, to be sent."""
    silenced = silences_for({d.alert for d in deliveries}, now=now)
    kept = []
    for delivery in deliveries:
        silence = silenced.get(delivery.alert_id)
        if silence is None:
            kept.append(delivery)
            continue
        AlertDelivery.objects.filter(pk=delivery.pk, attempts=delivery.attempts).update(
            status=DeliveryStatus.SILENCED,
            silence=silence,
            next_attempt_at=None,
            last_error=f"silenced by silence {silence.pk}: {silence.reason}"[:2000],
        )
        logger.info(
            "alert delivery silenced",
            extra={"delivery_id": delivery.pk, "alert_id": delivery.alert_id, "silence_id": silence.pk},
        )
    return kept


def deliveries_enqueue(*, alert_ids: Iterable[int], now: datetime, dispatch: bool = True) -> list[int]:
    """Route new or escalated alerts: one pending delivery per enabled channel that wants each alert
    (an outbox: the rows commit with the caller's transaction). `dispatch` queues the fast path after
    commit; the pipeline passes False and dispatches in its own after-commit order.

    Idempotent: a trigger already enqueued (same alert, channel and severity) is not enqueued again."""
    ids = sorted(set(alert_ids))
    if not ids:
        return []
    channels = list(NotificationChannel.objects.filter(enabled=True))
    if not channels:
        return []
    alerts = list(Alert.objects.filter(pk__in=ids, status__in=(Status.OPEN, Status.ACKNOWLEDGED)))
    escalated = set(
        AlertTransition.objects.filter(alert_id__in=ids, note__startswith="escalated").values_list(
            "alert_id", flat=True
        )
    )
    silenced = silences_for(alerts, now=now)
    rows = [
        _row(alert, channel, silenced.get(alert.pk), now=now, escalated=alert.pk in escalated)
        for alert in alerts
        for channel in channels
        if channel.wants(alert_type=alert.type, severity=alert.severity)
    ]
    if not rows:
        return []
    AlertDelivery.objects.bulk_create(rows, ignore_conflicts=True)
    if silenced:
        logger.info("alert deliveries silenced", extra={"alerts": len(silenced)})
    queued = list(
        AlertDelivery.objects.filter(
            alert_id__in=[a.pk for a in alerts], status=DeliveryStatus.PENDING, attempts=0
        ).values_list("pk", flat=True)
    )
    logger.info("alert deliveries enqueued", extra={"alerts": len(alerts), "deliveries": len(queued)})
    if dispatch:
        _schedule(queued)
    return queued


def _send(deliveries: list[AlertDelivery], now: datetime) -> None:
    """One message for these rows (one channel, type, severity and trigger): the alert's own, or the
    group's when there are several."""
    first = deliveries[0]
    channel = first.channel
    if not channel.enabled:
        raise TransportError(f"channel {channel.name!r} is disabled", permanent=True)
    notifier = notifier_for(channel)
    if len(deliveries) == 1:
        message = alert_message(alert=first.alert, now=now, trigger=first.trigger)
    else:
        message = group_message(alerts=[d.alert for d in deliveries], now=now, trigger=first.trigger)
    message["delivery_id"] = first.pk
    message["delivery_ids"] = [d.pk for d in deliveries]
    notifier.send(first.alert, message)


def delivery_attempt(*, delivery_id: int, now: datetime) -> str | None:
    """Claim one due delivery and send it. Returns its new status, or None when it was not ours to send
    (already sent, not due, or claimed by another worker a moment ago)."""
    return deliveries_attempt(delivery_ids=[delivery_id], now=now)


def deliveries_attempt(*, delivery_ids: list[int], now: datetime) -> str | None:
    """Claim these due deliveries (one channel, type, severity and trigger) and send them as one message.
    Each row is claimed by a conditional UPDATE; rows another worker holds, or already sent, are left
    out. Returns the outcome, or None when none was ours to send."""
    return _attempt(delivery_ids, now)[0]


def _attempt(delivery_ids: list[int], now: datetime) -> tuple[str | None, int, int]:
    """deliveries_attempt, how many of the rows were claimed (sent, failed or dead), and how many of
    those a silence kept back."""
    claimed = [
        pk
        for pk in sorted(delivery_ids)
        if AlertDelivery.objects.filter(pk=pk, status__in=CLAIMABLE, next_attempt_at__lte=now).update(
            next_attempt_at=now + _lease(), attempts=F("attempts") + 1
        )
    ]
    if not claimed:
        return None, 0, 0
    deliveries = list(
        AlertDelivery.objects.select_related("alert", "channel").filter(pk__in=claimed).order_by("pk")
    )
    deliveries = deliveries_silence(deliveries, now=now)
    if not deliveries:
        return DeliveryStatus.SILENCED, 0, len(claimed)
    started = time.perf_counter()
    error = send_guarded(lambda: _send(deliveries, now), delivery_ids=claimed)
    duration_ms = round((time.perf_counter() - started) * 1000)
    outcome: str = DeliveryStatus.SENT
    for delivery in deliveries:
        status = _settle(delivery, error, now=now, duration_ms=duration_ms, group=len(deliveries))
        if status != DeliveryStatus.SENT:
            outcome = status
    return outcome, len(deliveries), len(claimed) - len(deliveries)


def _settle(
    delivery: AlertDelivery, error: TransportError | None, *, now: datetime, duration_ms: int, group: int
) -> str:
    """Record one row's attempt: sent, a retry scheduled, or a dead letter."""
    # Only while the claim is still ours (a lease that ran out may have been taken over).
    mine = AlertDelivery.objects.filter(pk=delivery.pk, attempts=delivery.attempts, status__in=CLAIMABLE)
    log_extra = {
        "delivery_id": delivery.pk,
        "alert_id": delivery.alert_id,
        "channel": delivery.channel.name,
        "attempt": delivery.attempts,
        "ms": duration_ms,
        "group": group,
    }
    if error is None:
        mine.update(
            status=DeliveryStatus.SENT,
            sent_at=now,
            duration_ms=duration_ms,
            last_error="",
            next_attempt_at=None,
        )
        logger.info("alert delivered", extra=log_extra)
        return DeliveryStatus.SENT
    last_error = error.message[:2000]
    if error.permanent or delivery.attempts >= settings.ALERT_DELIVERY_MAX_ATTEMPTS:
        mine.update(
            status=DeliveryStatus.DEAD,
            dead_at=now,
            duration_ms=duration_ms,
            last_error=last_error,
            next_attempt_at=None,
        )
        logger.warning(
            "alert delivery dead-lettered",
            extra={**log_extra, "error": last_error, "permanent": error.permanent},
        )
        _mirror(delivery, last_error, now)
        return DeliveryStatus.DEAD
    retry_at = now + _backoff(delivery.attempts)
    mine.update(
        status=DeliveryStatus.FAILED, next_attempt_at=retry_at, duration_ms=duration_ms, last_error=last_error
    )
    logger.info("alert delivery failed, retry scheduled", extra={**log_extra, "error": last_error})
    return DeliveryStatus.FAILED


def _mirror(delivery: AlertDelivery, error: str, now: datetime) -> None:
    queue_url = settings.ALERT_DLQ_SQS_URL
    if not queue_url:
        return
    alert = delivery.alert
    body = {
        "delivery_id": delivery.pk,
        "alert_id": alert.pk,
        "channel": delivery.channel.name,
        "channel_kind": delivery.channel.kind,
        "severity": delivery.severity,
        "type": alert.type,
        "entity": {"type": alert.entity_type, "id": alert.entity_id},
        "summary": alert.message,
        "attempts": delivery.attempts,
        "error": error,
        "dead_at": now.isoformat(),
    }
    try:
        dead_letter_mirror(queue_url=queue_url, body=body)
    except TransportError as exc:  # the row is the record; the SQS copy is best effort
        logger.warning(
            "dead letter not mirrored to SQS", extra={"delivery_id": delivery.pk, "error": exc.message}
        )


def deliveries_due(*, now: datetime, limit: int) -> list[tuple]:
    """(delivery id, channel id, alert type, severity, trigger, created_at) of deliveries due now,
    oldest first."""
    return list(
        AlertDelivery.objects.filter(status__in=CLAIMABLE, next_attempt_at__lte=now)
        .order_by("next_attempt_at", "id")
        .values_list(*_GROUP_FIELDS)[:limit]
    )


def deliveries_send_due(*, now: datetime, limit: int = 200) -> dict[str, int]:
    """Send every due delivery (the beat task and the embedded sweep thread), a group of alerts raised
    together as one message. Returns counts of rows by outcome.

    A channel whose delivery fails in this sweep is skipped for the rest of it (`deferred`): a dead
    endpoint costs one timeout per sweep, not one per queued alert, and other channels go on."""
    outcome: Counter[str] = Counter()
    failing: set[int] = set()
    due = deliveries_due(now=now, limit=limit)
    channel_of = {row[0]: row[1] for row in due}
    for ids in _groups(due):
        if channel_of[ids[0]] in failing:
            outcome["deferred"] += len(ids)
            continue
        status, claimed, silenced = _attempt(ids, now)
        if claimed:
            outcome[str(status)] += claimed
        if silenced:
            outcome[DeliveryStatus.SILENCED.value] += silenced
        if claimed + silenced < len(ids):
            outcome["skipped"] += len(ids) - claimed - silenced
        if status == DeliveryStatus.FAILED:
            failing.add(channel_of[ids[0]])
    return dict(outcome)


def deliveries_replay(*, delivery_ids: Iterable[int], now: datetime) -> int:
    """Dead letters (or failing rows) back to pending with a fresh set of attempts, due now."""
    ids = list(
        AlertDelivery.objects.filter(
            pk__in=list(delivery_ids), status__in=(DeliveryStatus.DEAD, DeliveryStatus.FAILED)
        ).values_list("pk", flat=True)
    )
    count = AlertDelivery.objects.filter(pk__in=ids).update(
        status=DeliveryStatus.PENDING, attempts=0, next_attempt_at=now, dead_at=None
    )
    logger.info("alert deliveries replayed", extra={"deliveries": count})
    _schedule(ids)
    return count


def channel_send_test(*, channel: NotificationChannel, now: datetime) -> None:
    """Send a made-up alert through a channel at once (admin "send test alert"); raises TransportError."""
    alert = Alert(
        type=(channel.alert_types or ["low_health_score"])[0],
        severity=channel.min_severity,
        status=Status.OPEN,
        entity_type=EntityType.STUDENT,
        entity_id="stu_test",
        message=f"Test alert from IOps: channel {channel.name!r} works",
        details={"test": True},
        occurrences=1,
        first_seen=now,
        last_seen=now,
    )
    message = alert_message(alert=alert, now=now, trigger="test")
    notifier_for(channel).send(alert, message)
