from celery import shared_task
from django.utils import timezone

from iops.retention import retention_run


# The name predates the move to the composition root: queued messages and beat entries use it.
@shared_task(name="ingest.retention")
def retention(max_seconds: float = 300.0) -> dict:
    """Beat, hourly: delete expired raw events, buckets and insights in bounded batches."""
    budget = retention_run(now=timezone.now(), max_seconds=max_seconds)
    return {"deleted": budget.deleted, "batches": budget.batches, "complete": budget.complete}
