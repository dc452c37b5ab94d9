"""The /metrics collector: Prometheus families computed at scrape time from the database and stream.

Nothing is kept in process memory between scrapes (apart from each web process's short ingest tally,
flushed before reading), so every process serving /metrics reports the same cluster-wide figures.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from ingest import counters
from ingest.worker import BATCH_BUCKETS
from iops.ops import Figures, figures

Samples = Iterable[tuple[tuple[str, ...], float]]  # (label values, value)
Family = TypeVar("Family", GaugeMetricFamily, CounterMetricFamily)


def _filled(family: Family, samples: Samples) -> Family:
    for values, value in samples:
        family.add_metric(list(values), value)
    return family


def gauge(name: str, doc: str, samples: Samples, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
    return _filled(GaugeMetricFamily(name, doc, labels=list(labels)), samples)


def counter(name: str, doc: str, samples: Samples, labels: tuple[str, ...] = ()) -> CounterMetricFamily:
    return _filled(CounterMetricFamily(name, doc, labels=list(labels)), samples)


class IOpsCollector:
    def __init__(self, *, now: datetime):
        self.now = now

    def collect(self) -> Iterator[Metric]:
        counters.flush()
        f = figures(now=self.now)
        yield from self._ingest(f)
        yield from self._workers(f)
        yield from self._stream(f)
        yield from self._alerts(f)
        yield from self._insights(f)

    def _ingest(self, f: Figures) -> Iterator[Metric]:
        totals = counters.totals()
        for name, doc in (
            ("events_accepted", "Events accepted by POST /api/ingest (answered 202)."),
            ("events_rejected", "Events rejected by POST /api/ingest (validation or stream refusal)."),
            ("requests_unavailable", "Ingest requests refused with 503 (stream unavailable)."),
        ):
            yield counter(f"iops_ingest_{name}", doc, [((), totals[name])])
        yield counter(
            "iops_events_processed",
            "Events stored by the workers (sum of the per-minute series).",
            [((), f.metrics.events_processed)],
        )

    def _workers(self, f: Figures) -> Iterator[Metric]:
        rows = f.ingest.workers
        yield counter(
            "iops_worker_events_processed",
            "Events processed by each stream worker since it started.",
            [((row.name,), row.processed) for row in rows],
            labels=("worker",),
        )
        yield gauge(
            "iops_worker_heartbeat_age_seconds",
            "Seconds since each worker's last heartbeat.",
            [((row.name,), row.age_seconds) for row in rows],
            labels=("worker",),
        )
        buckets = [sum(int(row.batch_buckets.get(repr(bound), 0)) for row in rows) for bound in BATCH_BUCKETS]
        hist = HistogramMetricFamily(
            "iops_batch_duration_seconds", "Time to process one batch (all workers)."
        )
        pairs = [(_le(b), n) for b, n in zip(BATCH_BUCKETS, buckets, strict=True)]
        total_count = sum(row.batches for row in rows)
        hist.add_metric([], [*pairs, ("+Inf", total_count)], sum(row.batch_seconds_sum for row in rows))
        yield hist

    def _stream(self, f: Figures) -> Iterator[Metric]:
        b = f.ingest.stream
        yield gauge(
            "iops_stream_up", "1 when the stream backend answered this scrape.", [((), int(b["available"]))]
        )
        states = [s for s in ("waiting", "in_flight") if s in b] if b["available"] else []
        yield gauge(
            "iops_stream_backlog",
            "Stream entries waiting or delivered but not acked.",
            [((s,), b[s]) for s in states],
            labels=("state",),
        )
        if b.get("oldest_seconds") is not None:
            yield gauge(
                "iops_stream_oldest_unprocessed_seconds",
                "Age of the oldest accepted event not yet processed (absent when none waits).",
                [((), b["oldest_seconds"])],
            )
        if b.get("millis_behind_latest") is not None:
            yield gauge(
                "iops_stream_millis_behind_latest",
                "Kinesis consumer lag (this process).",
                [((), b["millis_behind_latest"])],
            )
        yield gauge(
            "iops_stream_dead_letters",
            "Stream messages parked as dead letters.",
            [((), f.ingest.stream_dead_letters)],
        )

    def _alerts(self, f: Figures) -> Iterator[Metric]:
        a = f.alerts
        yield gauge(
            "iops_alerts",
            "Alerts by severity and status.",
            [((severity, status), n) for severity, status, n in a.by_severity_status],
            labels=("severity", "status"),
        )
        yield gauge(
            "iops_alert_deliveries",
            "Alert deliveries by status.",
            [((status,), n) for status, n in sorted(a.deliveries.items())],
            labels=("status",),
        )
        yield gauge(
            "iops_alert_dead_letters", "Alert deliveries given up (dead letters).", [((), a.dead_deliveries)]
        )

    def _insights(self, f: Figures) -> Iterator[Metric]:
        yield gauge(
            "iops_insights",
            "Stored insights by model and whether the rules fallback scored them.",
            [((model, "true" if fell_back else "false"), n) for model, fell_back, n in f.insights.stored],
            labels=("model", "fallback"),
        )
        yield gauge(
            "iops_churn_model_calls",
            "Churn scorings in the last 24 hours by model, and fallbacks.",
            [((outcome,), n) for outcome, n in sorted(f.insights.model_calls.items())],
            labels=("outcome",),
        )


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def render(*, now: datetime) -> bytes:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(IOpsCollector(now=now))
    return generate_latest(registry)
