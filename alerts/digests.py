"""Digests (issue 19): a channel with `digest` hourly or daily gets its low-severity alerts as one message
per period instead of one each.

Routing (alerts/delivery.py) leaves such deliveries in status `digest`, due at the end of their period
(`next_attempt_at`). The periodic task `alerts.send_digests` first holds the channel's period (a
conditional UPDATE of `digest_claimed_until`: concurrent runs never split a period into two messages),
then claims each due row with a conditional UPDATE (as the ordinary sweep does: the lease moves
next_attempt_at forward and counts the attempt), so no row is ever sent twice, and sends one message per
channel listing what was raised, grouped by type. A failed digest stays `digest` with a retry scheduled; after ALERT_DELIVERY_MAX_ATTEMPTS its
rows become dead letters.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import datetime

from django.conf import settings
from django.db.models import F, Q

from alerts.delivery import _backoff, _lease, deliveries_silence, send_guarded
from alerts.messages import digest_message
from alerts.models import AlertDelivery, DeliveryStatus, NotificationChannel
from alerts.notifiers import TransportError, notifier_for

logger = logging.getLogger(__name__)


def digests_due(*, now: datetime) -> dict[int, list[int]]:
    """{channel id: ids of its digest rows due now}, oldest first."""
    due: dict[int, list[int]] = {}
    rows = AlertDelivery.objects.filter(status=DeliveryStatus.DIGEST, next_attempt_at__lte=now).order_by(
        "created_at", "id"
    )
    for pk, channel_id in rows.values_list("pk", "channel_id"):
        due.setdefault(channel_id, []).append(pk)
    return due


def _claim(ids: list[int], now: datetime) -> list[int]:
    return [
        pk
        for pk in ids
        if AlertDelivery.objects.filter(pk=pk, status=DeliveryStatus.DIGEST, next_attempt_at__lte=now).update(
            next_attempt_at=now + _lease(), attempts=F("attempts") + 1
        )
    ]


def digest_send(*, delivery_ids: list[int], now: datetime) -> tuple[str | None, int]:
    """Claim these digest rows (one channel) and send them as one message. Returns the outcome (None when
    none was ours) and how many rows it covered."""
    claimed = _claim(sorted(delivery_ids), now)
    if not claimed:
        return None, 0
    rows = list(
        AlertDelivery.objects.select_related("alert", "channel")
        .filter(pk__in=claimed)
        .order_by("created_at", "pk")
    )
    rows = deliveries_silence(rows, now=now)
    if not rows:
        return DeliveryStatus.SILENCED, 0
    channel = rows[0].channel
    started = time.perf_counter()

    def send() -> None:
        if not channel.enabled:
            raise TransportError(f"channel {channel.name!r} is disabled", permanent=True)
        message = digest_message(channel=channel, alerts=[r.alert for r in rows], now=now)
        message["delivery_ids"] = [r.pk for r in rows]
        notifier_for(channel).send(rows[0].alert, message)

    error = send_guarded(send, delivery_ids=claimed)
    duration_ms = round((time.perf_counter() - started) * 1000)
    return _settle(rows, error, now=now, duration_ms=duration_ms), len(rows)


def _settle(
    rows: list[AlertDelivery], error: TransportError | None, *, now: datetime, duration_ms: int
) -> str:
    """Record the digest's attempt on each of its rows (while the claim is still ours)."""
    extra = {"channel": rows[0].channel.name, "deliveries": len(rows), "ms": duration_ms}
    if error is None:
        status, fields = DeliveryStatus.SENT, {"sent_at": now, "last_error": "", "next_attempt_at": None}
        logger.info("alert digest delivered", extra=extra)
    elif error.permanent or max(r.attempts for r in rows) >= settings.ALERT_DELIVERY_MAX_ATTEMPTS:
        status = DeliveryStatus.DEAD
        fields = {"dead_at": now, "last_error": error.message[:2000], "next_attempt_at": None}
        logger.warning("alert digest dead-lettered", extra={**extra, "error": error.message})
    else:
        # Still waiting for a digest: retried as one message by this task, never sent one by one.
        status = DeliveryStatus.DIGEST
        fields = {
            "last_error": error.message[:2000],
            "next_attempt_at": now + _backoff(max(r.attempts for r in rows)),
        }
        logger.info("alert digest failed, retry scheduled", extra={**extra, "error": error.message})
    for row in rows:
        AlertDelivery.objects.filter(pk=row.pk, attempts=row.attempts, status=DeliveryStatus.DIGEST).update(
            status=status, duration_ms=duration_ms, **fields
        )
    return "failed" if status == DeliveryStatus.DIGEST else status


def _claim_channel(channel_id: int, now: datetime) -> datetime | None:
    """This run's hold on a channel's due digest (None: another run has it), so concurrent runs never
    split one period into two messages. The hold expires by itself should the run die."""
    until = now + _lease()
    free = Q(digest_claimed_until__isnull=True) | Q(digest_claimed_until__lte=now)
    taken = NotificationChannel.objects.filter(free, pk=channel_id).update(digest_claimed_until=until)
    return until if taken else None


def digests_send_due(*, now: datetime) -> dict[str, int]:
    """Every channel's due digest, one message each (the beat task `alerts.send_digests`). Returns counts
    of rows by outcome."""
    outcome: Counter[str] = Counter()
    for channel_id, ids in digests_due(now=now).items():
        until = _claim_channel(channel_id, now)
        if until is None:
            continue
        try:
            status, count = digest_send(delivery_ids=ids, now=now)
        finally:
            NotificationChannel.objects.filter(pk=channel_id, digest_claimed_until=until).update(
                digest_claimed_until=None
            )
        if status is not None:
            outcome[str(status)] += count or len(ids)
    return dict(outcome)
