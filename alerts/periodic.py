"""The alert sweep as a Celery task (beat: every ALERT_SWEEP_SECONDS). Kept out of alerts/tasks.py,
which holds delivery; loaded through CELERY_IMPORTS."""

from celery import shared_task
from django.utils import timezone

from alerts.services import alerts_refresh_stale, alerts_sweep


@shared_task(name="alerts.sweep")
def sweep() -> dict[str, int]:
    return alerts_sweep(now=timezone.now())


@shared_task(name="alerts.refresh_stale")
def refresh_stale() -> dict[str, int]:
    """Beat (every SNAPSHOT_REFRESH_SECONDS): decayed snapshots refreshed, their rules run."""
    return alerts_refresh_stale(now=timezone.now())
