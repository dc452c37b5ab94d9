"""The stream consumer loop: read a batch, process it, ack after commit. Used by the embedded
thread, the Celery worker bootstep and the `drain_stream` task alike."""

from __future__ import annotations

import gc
import logging
import os
import random
import socket
import threading
import time
from contextlib import suppress
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections
from django.utils import timezone

from ingest.streams import Delivery, EventStream, StreamUnavailable, get_stream
from iops.lib.request_id import request_id_var
from pipeline.batch import process_batch

logger = logging.getLogger(__name__)

TRANSIENT = (OperationalError, InterfaceError, StreamUnavailable)

# A batch the database rolled back for a conflict with another worker's transaction (it lost a
# deadlock, or a serialization failure) is run again at once, after a short random pause, up to this
# many times in all, before the loop's outage handling leaves it to redelivery (STREAM_CLAIM_IDLE_MS).
CONFLICT_ATTEMPTS = 3

# A slice of redelivered messages whose worker died is retried in this many pieces (ingest.worker
# StreamWorker._settle_suspects).
SUSPECT_SPLIT = 16

# Upper bounds (seconds) of the batch duration histogram served by /metrics.
BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _events(deliveries: list[Delivery]) -> list[dict[str, Any]]:
    """The event bodies of decoded deliveries (undecodable ones are dead-lettered before processing)."""
    return [d.event for d in deliveries if d.event is not None]


def rolled_back_by_conflict(exc: BaseException) -> bool:
    """The database ended the transaction for a conflict with a concurrent one (deadlock victim,
    serialization failure): running it again is expected to succeed."""
    return str(getattr(exc.__cause__, "sqlstate", None) or "").startswith(
        "40"
    )  # class 40: transaction rollback


def batch_request_id(events: list[dict]) -> str:
    """The request id(s) a batch came from, for its log lines: `rid` or `rid+N` when it mixes requests."""
    ids = list(dict.fromkeys(str(e["request_id"]) for e in events if e.get("request_id")))
    if not ids:
        return "-"
    return ids[0] if len(ids) == 1 else f"{ids[0]}+{len(ids) - 1}"


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
        self.started_at = timezone.now()
        self.batches = 0
        self.batch_seconds_sum = 0.0
        self.batch_counts = [0] * len(BATCH_BUCKETS)  # per bucket, not cumulative
        self._beat_at: float | None = None  # monotonic time of the last heartbeat write
        self._log_at = time.monotonic()
        self._log_processed = 0

    def run_once(self) -> int:
        """Process one batch, then write the heartbeat / progress line when they are due."""
        try:
            return self._run_once()
        finally:
            self._tick()

    def _observe(self, seconds: float) -> None:
        self.batches += 1
        self.batch_seconds_sum += seconds
        for i, bound in enumerate(BATCH_BUCKETS):
            if seconds <= bound:
                self.batch_counts[i] += 1
                break

    def heartbeat(self) -> None:
        """Upsert this worker's WorkerHeartbeat row (one UPDATE; an INSERT the first time)."""
        from ingest.models import WorkerHeartbeat

        cumulative, running = {}, 0
        for bound, n in zip(BATCH_BUCKETS, self.batch_counts, strict=True):
            running += n
            cumulative[repr(bound)] = running
        fields = {
            "backend": self.stream.name,
            "last_seen": timezone.now(),
            "processed": self.processed,
            "batches": self.batches,
            "batch_seconds_sum": self.batch_seconds_sum,
            "batch_buckets": cumulative,
        }
        if not WorkerHeartbeat.objects.filter(name=self.consumer[:200]).update(**fields):
            WorkerHeartbeat.objects.update_or_create(
                name=self.consumer[:200], defaults={**fields, "started_at": self.started_at}
            )

    def _tick(self) -> None:
        mono = time.monotonic()
        if self._beat_at is None or mono - self._beat_at >= settings.WORKER_HEARTBEAT_SECONDS:
            try:
                self.heartbeat()
                self._beat_at = mono
            except TRANSIENT as exc:  # the loop's own retry handles the outage; the beat waits
                logger.debug("heartbeat not written", extra={"error": exc.__class__.__name__})
        elapsed = mono - self._log_at
        if elapsed >= settings.WORKER_LOG_SECONDS:
            done = self.processed - self._log_processed
            logger.info(
                "worker progress: %d events in %.0f s (%.1f events/s)",
                done,
                elapsed,
                done / elapsed,
                extra={"consumer": self.consumer, "events": done, "rate": round(done / elapsed, 1)},
            )
            self._log_at, self._log_processed = mono, self.processed

    def _process(self, events: list[dict]) -> None:
        token = request_id_var.set(batch_request_id(events))
        started = time.perf_counter()
        try:
            for attempt in range(1, CONFLICT_ATTEMPTS + 1):
                try:
                    process_batch(events, now=timezone.now())
                    return
                except OperationalError as exc:
                    if attempt == CONFLICT_ATTEMPTS or not rolled_back_by_conflict(exc):
                        raise
                    logger.warning(
                        "batch rolled back by a conflict with another worker; running it again",
                        extra={"attempt": attempt, "events": len(events), "error": str(exc)[:200]},
                    )
                    time.sleep(random.uniform(0.05, 0.25) * attempt)  # noqa: S311 - spreading retries
        finally:
            self._observe(time.perf_counter() - started)
            request_id_var.reset(token)

    def _run_once(self) -> int:
        """Process one batch; returns how many stream messages it settled (acked or dead-lettered)."""
        deliveries = self.stream.read(consumer=self.consumer, count=self.batch_size, block_ms=self.block_ms)
        if not deliveries:
            return 0
        good = [d for d in deliveries if d.event is not None]
        for bad in (d for d in deliveries if d.event is None):
            logger.warning("malformed stream message moved to dead letters", extra={"message_id": bad.token})
            self.stream.dead_letter(bad, bad.error)
        fresh = [d for d in good if d.deliveries <= 1]
        if fresh:
            self._settle(fresh)
        suspects = [d for d in good if d.deliveries > 1]
        if suspects:
            self._settle_suspects(suspects)
        return len(deliveries)

    def _settle(self, deliveries: list[Delivery]) -> None:
        """Process these as one batch (isolating failing events if it fails) and ack what was processed."""
        try:
            self._process(_events(deliveries))
        except TRANSIENT:
            raise
        except Exception:  # noqa: BLE001 - isolate the poison message, keep the rest flowing
            logger.exception("batch failed; isolating the failing events")
            deliveries = self._isolate(deliveries)
        self.stream.ack(deliveries)
        self.processed += len(deliveries)

    def _settle_suspects(self, suspects: list[Delivery]) -> None:
        """Messages handed out before and never settled: the batch they were in failed, or the process
        handling it died (killed, out of memory, a crash in native code — possibly because of one of
        them). An exception is isolated by `_settle`; a death leaves nothing behind in the process, so
        each slice of suspects is recorded (SuspectDelivery) before it is processed and the record
        removed after. A suspect that comes back still recorded was in a slice whose worker died: the
        slice is retried in SUSPECT_SPLIT pieces, each settled before the next, and one that was being
        processed alone is dead-lettered unprocessed. A record that kills every worker it reaches costs
        1 + ⌈log16(batch size)⌉ worker deaths (4 at 2,000), not the partition forever."""
        from ingest.models import SuspectDelivery

        backend = self.stream.name
        mid = {d.token: d.token[:100] for d in suspects}  # the message_id column's width
        records = SuspectDelivery.objects.filter(backend=backend)
        recorded = dict(
            records.filter(message_id__in=list(mid.values())).values_list("message_id", "slice_size")
        )
        # Never recorded: a first redelivery, one slice. The same slice size recorded: (mostly) the
        # same dead slice. Each is cut in SUSPECT_SPLIT pieces; a slice of one is not retried.
        groups: dict[int, list[Delivery]] = {}
        for d in suspects:
            groups.setdefault(recorded.get(mid[d.token], 0), []).append(d)
        alone = groups.pop(1, [])
        for d in alone:
            logger.error(
                "event dead-lettered: its worker died processing it alone",
                extra={"message_id": d.token, "deliveries": d.deliveries},
            )
            self.stream.dead_letter(
                d, f"the worker processing this event alone died ({d.deliveries} deliveries); not retried"
            )
        if alone:
            records.filter(message_id__in=[mid[d.token] for d in alone]).delete()
        for size, group in sorted(groups.items()):
            step = -(-(size or len(group)) // SUSPECT_SPLIT)
            for i in range(0, len(group), step):
                piece = group[i : i + step]
                ids = [mid[d.token] for d in piece]
                now = timezone.now()
                SuspectDelivery.objects.bulk_create(
                    [
                        SuspectDelivery(
                            backend=backend,
                            message_id=m,
                            slice_size=len(piece),
                            consumer=self.consumer[:200],
                            started_at=now,
                        )
                        for m in ids
                    ],
                    update_conflicts=True,
                    unique_fields=["backend", "message_id"],
                    update_fields=["slice_size", "consumer", "started_at"],
                )
                try:
                    self._settle(piece)
                finally:  # the process survived: whatever happened, these did not kill it
                    with suppress(*TRANSIENT):
                        records.filter(message_id__in=ids).delete()

    def _isolate(self, deliveries: list[Delivery]) -> list[Delivery]:
        """A batch failed (its transaction rolled back): process its halves as batches, splitting a
        failing half again, in order — k bad events among n cost about 2·k·log2(n) attempts, not n
        single-event transactions. An event that fails alone is dead-lettered once it has been
        delivered STREAM_MAX_DELIVERIES times, else left for redelivery. Returns what was processed."""
        if len(deliveries) == 1:
            d = deliveries[0]
            try:
                self._process(_events([d]))
                return [d]
            except TRANSIENT:
                raise
            except Exception as exc:  # noqa: BLE001
                if d.deliveries >= settings.STREAM_MAX_DELIVERIES:
                    self.stream.dead_letter(d, f"{exc.__class__.__name__}: {exc}")
                else:
                    logger.warning(
                        "event failed, left for redelivery",
                        extra={"message_id": d.token, "request_id": (d.event or {}).get("request_id", "-")},
                    )
                return []
        settled: list[Delivery] = []
        middle = len(deliveries) // 2
        for half in (deliveries[:middle], deliveries[middle:]):
            if len(half) == 1:
                settled.extend(self._isolate(half))
                continue
            try:
                self._process(_events(half))
                settled.extend(half)
            except TRANSIENT:
                raise
            except Exception:  # noqa: BLE001 - split again until the bad events stand alone
                settled.extend(self._isolate(half))
        return settled

    def run(self, stop: threading.Event) -> None:
        settle_process()
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
        try:
            self.heartbeat()  # the final count, so pipeline_status shows what this worker did
        except TRANSIENT:
            pass
        logger.info("stream worker stopped", extra={"consumer": self.consumer, "processed": self.processed})


def settle_process() -> None:
    """Before a worker loop starts: move everything the process holds by now (Django, the apps, numpy,
    pandas, their caches) to the garbage collector's permanent generation. A full collection then walks
    only what batches create, not the whole process: in the replay, full collections triggered inside
    the fold were a third of its Python. What is frozen is never collected: only the start-up's objects
    are, and they live as long as the process. Once per process; benches that time process_batch call
    it too."""
    global _settled
    if _settled:
        return
    _settled = True
    gc.collect()
    gc.freeze()


_settled = False


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
