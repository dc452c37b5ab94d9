"""The /metrics collector: Prometheus families computed at scrape time from the database and stream.

Nothing is kept in process memory between scrapes (apart from each web process's short ingest tally,
flushed before reading), so every process serving /metrics reports the same cluster-wide figures.
"""

from __future__ import annotations

import math
from datetime import datetime

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from ingest import counters
from ingest.worker import BATCH_BUCKETS
from iops.ops import Figures, figures


class IOpsCollector:
    def __init__(self, *, now: datetime):
        self.now = now

    def collect(self):
        counters.flush()
        f = figures(now=self.now)
        yield from self._ingest(f)
        yield from self._workers(f)
        yield from self._stream(f)
        yield from self._alerts(f)
        yield from self._insights(f)

    def _ingest(self, f: Figures):
        totals = counters.totals()
        for name, doc in (
            ("events_accepted", "Events accepted by POST /api/ingest (answered 202)."),
            ("events_rejected", "Events rejected by POST /api/ingest (validation or stream refusal)."),
            ("requests_unavailable", "Ingest requests refused with 503 (stream unavailable)."),
        ):
            c = CounterMetricFamily(f"iops_ingest_{name}", doc)
            c.add_metric([], totals[name])
            yield c
        c = CounterMetricFamily(
            "iops_events_processed", "Events stored by the workers (sum of the per-minute series)."
        )
        c.add_metric([], f.metrics.events_processed)
        yield c

    def _workers(self, f: Figures):
        rows = f.ingest.workers
        processed = CounterMetricFamily(
            "iops_worker_events_processed",
            "Events processed by each stream worker since it started.",
            labels=["worker"],
        )
        age = GaugeMetricFamily(
            "iops_worker_heartbeat_age_seconds",
            "Seconds since each worker's last heartbeat.",
            labels=["worker"],
        )
        buckets = [0] * len(BATCH_BUCKETS)
        total_sum, total_count = 0.0, 0
        for row in rows:
            processed.add_metric([row.name], row.processed)
            age.add_metric([row.name], row.age_seconds)
            for i, bound in enumerate(BATCH_BUCKETS):
                buckets[i] += int(row.batch_buckets.get(repr(bound), 0))
            total_sum += row.batch_seconds_sum
            total_count += row.batches
        yield processed
        yield age
        hist = HistogramMetricFamily(
            "iops_batch_duration_seconds", "Time to process one batch (all workers)."
        )
        pairs = [(_le(b), n) for b, n in zip(BATCH_BUCKETS, buckets, strict=True)]
        hist.add_metric([], [*pairs, ("+Inf", total_count)], total_sum)
        yield hist

    def _stream(self, f: Figures):
        b = f.ingest.stream
        up = GaugeMetricFamily("iops_stream_up", "1 when the stream backend answered this scrape.")
        up.add_metric([], 1 if b["available"] else 0)
        yield up
        backlog = GaugeMetricFamily(
            "iops_stream_backlog", "Stream entries waiting or delivered but not acked.", labels=["state"]
        )
        if b["available"]:
            for state in ("waiting", "in_flight"):
                if state in b:
                    backlog.add_metric([state], b[state])
        yield backlog
        if b.get("oldest_seconds") is not None:
            oldest = GaugeMetricFamily(
                "iops_stream_oldest_unprocessed_seconds",
                "Age of the oldest accepted event not yet processed (absent when none waits).",
            )
            oldest.add_metric([], b["oldest_seconds"])
            yield oldest
        if b.get("millis_behind_latest") is not None:
            lag = GaugeMetricFamily(
                "iops_stream_millis_behind_latest", "Kinesis consumer lag (this process)."
            )
            lag.add_metric([], b["millis_behind_latest"])
            yield lag
        dead = GaugeMetricFamily("iops_stream_dead_letters", "Stream messages parked as dead letters.")
        dead.add_metric([], f.ingest.stream_dead_letters)
        yield dead

    def _alerts(self, f: Figures):
        alerts = GaugeMetricFamily(
            "iops_alerts", "Alerts by severity and status.", labels=["severity", "status"]
        )
        for severity, status, n in f.alerts.by_severity_status:
            alerts.add_metric([severity, status], n)
        yield alerts
        g = GaugeMetricFamily("iops_alert_deliveries", "Alert deliveries by status.", labels=["status"])
        for status, n in sorted(f.alerts.deliveries.items()):
            g.add_metric([status], n)
        yield g
        dead = GaugeMetricFamily("iops_alert_dead_letters", "Alert deliveries given up (dead letters).")
        dead.add_metric([], f.alerts.dead_deliveries)
        yield dead

    def _insights(self, f: Figures):
        g = GaugeMetricFamily(
            "iops_insights",
            "Stored insights by model and whether the rules fallback scored them.",
            labels=["model", "fallback"],
        )
        for model, fell_back, n in f.insights.stored:
            g.add_metric([model, "true" if fell_back else "false"], n)
        yield g
        c = GaugeMetricFamily(
            "iops_churn_model_calls",
            "Churn scorings in the last 24 hours by model, and fallbacks.",
            labels=["outcome"],
        )
        for outcome, n in sorted(f.insights.model_calls.items()):
            c.add_metric([outcome], n)
        yield c


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def render(*, now: datetime) -> bytes:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(IOpsCollector(now=now))
    return generate_latest(registry)
