"""The stream consumer loop: read a batch, process it, ack after commit. Used by the embedded
thread, the Celery worker bootstep and the `drain_stream` task alike."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections
from django.utils import timezone

from ingest.pipeline import process_batch
from ingest.streams import Delivery, EventStream, StreamUnavailable, get_stream

logger = logging.getLogger(__name__)

TRANSIENT = (OperationalError, InterfaceError, StreamUnavailable)


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{threading.get_ident() % 10_000}"


class StreamWorker:
    def __init__(
        self,
        stream: EventStream | None = None,
        *,
        consumer: str | None = None,
        batch_size: int | None = None,
        block_ms: int | None = None,
    ):
        self.stream = stream or get_stream()
        self.consumer = consumer or consumer_name()
        self.batch_size = batch_size or settings.WORKER_BATCH_SIZE
        self.block_ms = settings.WORKER_BLOCK_MS if block_ms is None else block_ms
        self.processed = 0

    def run_once(self) -> int:
        """Process one batch; returns how many stream messages it settled (acked or dead-lettered)."""
        deliveries = self.stream.read(consumer=self.consumer, count=self.batch_size, block_ms=self.block_ms)
        if not deliveries:
            return 0
        good = [d for d in deliveries if d.event is not None]
        for bad in (d for d in deliveries if d.event is None):
            logger.warning("malformed stream message moved to dead letters", extra={"message_id": bad.token})
            self.stream.dead_letter(bad, bad.error)
        if good:
            try:
                process_batch([d.event for d in good], now=timezone.now())
            except TRANSIENT:
                raise
            except Exception:  # noqa: BLE001 - isolate the poison message, keep the rest flowing
                logger.exception("batch failed; retrying its events one by one")
                good = self._one_by_one(good)
            self.stream.ack(good)
            self.processed += len(good)
        return len(deliveries)

    def _one_by_one(self, deliveries: list[Delivery]) -> list[Delivery]:
        settled = []
        for d in deliveries:
            try:
                process_batch([d.event], now=timezone.now())
                settled.append(d)
            except TRANSIENT:
                raise
            except Exception as exc:  # noqa: BLE001
                if d.deliveries >= settings.STREAM_MAX_DELIVERIES:
                    self.stream.dead_letter(d, f"{exc.__class__.__name__}: {exc}")
                else:
                    logger.warning("event failed, left for redelivery", extra={"message_id": d.token})
        return settled

    def run(self, stop: threading.Event) -> None:
        backoff = 0.5
        logger.info("stream worker started", extra={"consumer": self.consumer, "backend": self.stream.name})
        while not stop.is_set():
            try:
                self.run_once()
                backoff = 0.5
            except TRANSIENT as exc:
                logger.warning("stream or database unavailable, retrying", extra={"error": str(exc)[:200]})
                close_old_connections()
                stop.wait(backoff)
                backoff = min(backoff * 2, 10)
            except Exception:  # noqa: BLE001 - the loop must survive anything
                logger.exception("worker loop error")
                stop.wait(1)
            finally:
                close_old_connections()
        logger.info("stream worker stopped", extra={"consumer": self.consumer, "processed": self.processed})


def drain(*, max_seconds: float = 10.0, stream: EventStream | None = None) -> int:
    """Process until the stream is empty or time is up; returns messages settled."""
    worker = StreamWorker(stream, block_ms=0)
    deadline = time.monotonic() + max_seconds
    total = 0
    while time.monotonic() < deadline:
        n = worker.run_once()
        if n == 0:
            break
        total += n
    return total
