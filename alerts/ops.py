"""Operations entry points of alerts: the figures /metrics and `pipeline_status` report, and retention.

Called by plain imports from iops/ops.py and iops/retention.py (the composition root)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Count

from alerts.models import Alert, AlertDelivery, DeliveryStatus
from iops.lib.prune import PruneBudget


@dataclass(frozen=True)
class AlertsCounts:
    by_severity_status: list[tuple[str, str, int]]  # (severity, status, count) of every alert
    deliveries: dict[str, int] = field(default_factory=dict)  # by delivery status

    @property
    def dead_deliveries(self) -> int:
        return self.deliveries.get(DeliveryStatus.DEAD, 0)


def alerts_counts() -> AlertsCounts:
    rows = Alert.objects.values("severity", "status").annotate(n=Count("id")).order_by()
    deliveries = AlertDelivery.objects.values_list("status").annotate(n=Count("id")).order_by()
    return AlertsCounts(
        by_severity_status=[(r["severity"], r["status"], r["n"]) for r in rows],
        deliveries=dict(deliveries),
    )


def alerts_prune(*, now: datetime, budget: PruneBudget) -> int:
    """Nothing expires: alerts, their transitions and deliveries are the audit record, kept in full
    (the anomaly pass prunes its own rate minutes). Here so retention covers every app alike."""
    return 0
