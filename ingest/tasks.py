from celery import shared_task

from ingest.worker import drain


@shared_task(name="ingest.drain_stream")
def drain_stream(max_seconds: float = 10.0) -> int:
    """One-shot drain of the stream (the worker bootstep does this continuously)."""
    return drain(max_seconds=max_seconds)
