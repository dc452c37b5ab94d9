from celery import shared_task
from django.utils import timezone

from metrics.services import snapshots_refresh_stale


@shared_task(name="metrics.refresh_stale_snapshots")
def refresh_stale_snapshots() -> int:
    return snapshots_refresh_stale(now=timezone.now())
