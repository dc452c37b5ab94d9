from celery import shared_task

from ingest.worker import drain


@shared_task(name="ingest.drain_stream")
def drain_stream(max_seconds: float = 10.0) -> int:
    """One-shot drain of the stream (the worker bootstep does this continuously)."""
    return drain(max_seconds=max_seconds)


@shared_task(name="ingest.retention")
def retention(max_seconds: float = 300.0) -> dict:
    """Beat, hourly: delete expired raw events, buckets and insights in bounded batches."""
    from django.utils import timezone

    from ingest.retention import retention_run

    result = retention_run(now=timezone.now(), max_seconds=max_seconds)
    return {"deleted": result.deleted, "batches": result.batches, "complete": result.complete}
