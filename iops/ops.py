"""Operations figures for /healthz, /metrics and `pipeline_status`, gathered from each app's ops.py.

Every figure is read from the database and the stream at call time, so every process (web, worker,
an operator's shell) reports the same numbers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from alerts.ops import AlertsCounts, alerts_counts
from ingest.ops import IngestCounts, freshest_heartbeat_age, ingest_counts
from insights.ops import InsightsCounts, insights_counts
from metrics.ops import MetricsCounts, metrics_counts


@dataclass(frozen=True)
class Figures:
    ingest: IngestCounts
    metrics: MetricsCounts
    alerts: AlertsCounts
    insights: InsightsCounts


def figures(*, now: datetime) -> Figures:
    return Figures(
        ingest=ingest_counts(now=now),
        metrics=metrics_counts(),
        alerts=alerts_counts(),
        insights=insights_counts(now=now),
    )


def worker_heartbeat_age(*, now: datetime) -> float | None:
    """Seconds since the freshest worker heartbeat; None before any worker has beaten."""
    return freshest_heartbeat_age(now=now)


def pipeline_status(*, now: datetime) -> dict[str, Any]:
    """What `manage.py pipeline_status --json` prints."""
    ingest = ingest_counts(now=now)
    return {
        "as_of": now.isoformat(),
        "stream": ingest.stream,
        "events_per_second_1m": round(ingest.events_per_second_1m, 2),
        "dead_letters": {"stream": ingest.stream_dead_letters, "deliveries": alerts_counts().dead_deliveries},
        "workers": [
            {
                "name": w.name,
                "backend": w.backend,
                "last_seen": w.last_seen.isoformat(),
                "age_seconds": round(w.age_seconds, 1),
                "processed": w.processed,
                "batches": w.batches,
                "mean_batch_ms": round(1000 * w.batch_seconds_sum / w.batches, 1) if w.batches else None,
            }
            for w in ingest.workers
        ],
    }
