"""Cluster-wide ingest counters for /metrics (issue 9): accepted and rejected events.

Each web process adds to an in-memory tally on the hot path (no I/O) and folds it into the
IngestCounter rows (one UPDATE per name) at most every METRICS_FLUSH_SECONDS, from the request that
finds the flush due, and whenever /metrics is scraped in that process. A process that dies loses at
most that interval's tally; a database error keeps the tally for the next flush.
"""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings
from django.db import DatabaseError
from django.db.models import F

logger = logging.getLogger(__name__)

NAMES = ("events_accepted", "events_rejected", "requests_unavailable")

_lock = threading.Lock()
_pending: dict[str, int] = dict.fromkeys(NAMES, 0)
_flushed_at = time.monotonic()


def count(**increments: int) -> None:
    """Add to the tally (names from NAMES); flushes when the interval has passed."""
    with _lock:
        for name, n in increments.items():
            _pending[name] += n
        due = time.monotonic() - _flushed_at >= settings.METRICS_FLUSH_SECONDS
    if due:
        flush()


def flush() -> None:
    global _flushed_at
    from ingest.models import IngestCounter

    with _lock:
        taken = {k: v for k, v in _pending.items() if v}
        for name in taken:
            _pending[name] = 0
        _flushed_at = time.monotonic()
    try:
        for name, n in taken.items():
            if not IngestCounter.objects.filter(name=name).update(value=F("value") + n):
                IngestCounter.objects.get_or_create(name=name)
                IngestCounter.objects.filter(name=name).update(value=F("value") + n)
            taken[name] = 0
    except DatabaseError as exc:  # keep what was not written for the next flush
        logger.warning("ingest counters not flushed", extra={"error": exc.__class__.__name__})
        with _lock:
            for name, n in taken.items():
                _pending[name] += n


def totals() -> dict[str, int]:
    from ingest.models import IngestCounter

    values = dict.fromkeys(NAMES, 0)
    values.update(IngestCounter.objects.filter(name__in=NAMES).values_list("name", "value"))
    return values


def reset_local() -> None:
    """Tests: forget this process's unflushed tally."""
    with _lock:
        for name in NAMES:
            _pending[name] = 0
