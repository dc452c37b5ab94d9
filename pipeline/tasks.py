"""The time-driven passes as Celery tasks (beat). Their names predate this app and are kept: queued
messages and beat schedules name them."""

from celery import shared_task
from django.utils import timezone

from pipeline import periodic


@shared_task(name="alerts.sweep")
def sweep() -> dict[str, int]:
    """Beat (every ALERT_SWEEP_SECONDS)."""
    return periodic.sweep(now=timezone.now())


@shared_task(name="alerts.refresh_stale")
def refresh_stale() -> dict[str, int]:
    """Beat (every SNAPSHOT_REFRESH_SECONDS)."""
    return periodic.refresh_stale(now=timezone.now())
