"""What a pass (a batch, the stale refresh, the sweep) does beyond its own writes, in one place and one
order. Domain apps never call each other's side effects; this module does.

Inside the pass's transaction:
  route   new and escalated alerts get their delivery rows (an outbox: they commit with the alerts;
          a routing failure is confined to a savepoint and logged, never rolling the pass back)
After commit, in order (each step logs its failure and never raises: the pass is committed):
  1. insights   one scoring task for the alerts raised or updated (eager in embedded mode: inline);
                queued before the deliveries so a message usually carries its churn reading
  2. deliveries the fast path, a task per message (production; embedded mode leaves it to the sweep)
  3. broadcast  one "something changed" push to open dashboards, with whatever step 1 scored inline
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import nullcontext
from datetime import datetime

from django.conf import settings
from django.db import transaction

from alerts.delivery import deliveries_dispatch, deliveries_enqueue
from alerts.models import Alert, EntityType
from alerts.services import Raised
from insights.tasks import score_alerts, score_churn
from iops.lib import realtime

logger = logging.getLogger(__name__)


def after_pass(raised: list[Raised], *, now: datetime, events: int = 0, updated: Sequence[int] = ()) -> None:
    """Call inside the pass's transaction, once, with everything it raised (and, in `updated`, alerts
    it changed otherwise: auto-resolved, muted or unmuted by the clock)."""
    if not raised and not events and not updated:
        return
    deliveries = _route([r.alert_id for r in raised if r.created or r.escalated], now=now)
    change = realtime.Change(
        events=events,
        alerts_created=[r.alert_id for r in raised if r.created],
        alerts_updated=[r.alert_id for r in raised if not r.created] + list(updated),
    )
    alert_ids = sorted({r.alert_id for r in raised})
    transaction.on_commit(lambda: committed(change=change, alert_ids=alert_ids, deliveries=deliveries))


def committed(*, change: realtime.Change, alert_ids: list[int], deliveries: list[int]) -> None:
    with realtime.one_push(change):
        if alert_ids:
            _insights_enqueue(alert_ids=alert_ids)
        try:
            deliveries_dispatch(deliveries)
        except Exception:  # noqa: BLE001 - logged; the delivery sweep sends what the fast path missed
            logger.exception("deliveries not dispatched", extra={"deliveries": len(deliveries)})


def _route(alert_ids: list[int], *, now: datetime) -> list[int]:
    if not alert_ids:
        return []
    try:
        with transaction.atomic():
            return deliveries_enqueue(alert_ids=alert_ids, now=now, dispatch=False)
    except Exception:  # noqa: BLE001 - never lose a pass over notifications
        logger.exception("alert deliveries not enqueued", extra={"alerts": len(alert_ids)})
        return []


def _insights_enqueue(*, alert_ids: list[int]) -> None:
    """Churn/burnout scoring for the student and tutor alerts: one task for all of them. Eager (embedded)
    Celery scores inline in one transaction; should it fail, each alert is scored on its own in a
    savepoint, so a failure stays with its alert. Failures are logged, never raised."""
    try:
        rows = [
            list(row)
            for row in Alert.objects.filter(
                pk__in=alert_ids, entity_type__in=(EntityType.STUDENT, EntityType.TUTOR)
            ).values_list("entity_type", "entity_id", "pk")
        ]
    except Exception:  # noqa: BLE001 - logged; the alerts are already committed
        logger.exception("insight scoring not enqueued", extra={"alerts": len(alert_ids)})
        return
    if not rows:
        return
    eager = settings.CELERY_TASK_ALWAYS_EAGER
    try:
        with transaction.atomic() if eager else nullcontext():
            score_alerts.delay(rows)
        return
    except Exception:  # noqa: BLE001 - logged; retried one by one below when eager
        logger.exception("insight scoring not enqueued", extra={"alerts": len(rows)})
    if eager:
        _score_one_by_one(rows)


def _score_one_by_one(rows: list[list]) -> None:
    with transaction.atomic():
        for entity_type, entity_id, pk in rows:
            try:
                with transaction.atomic():
                    score_churn.delay(entity_type, entity_id, pk)
            except Exception:  # noqa: BLE001 - logged; the next alert still gets its insight
                logger.exception("insight not scored", extra={"alert_id": pk})
