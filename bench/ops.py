"""Cost of the operations endpoints with a large history: /metrics and `pipeline_status` vs /healthz.

The baseline is measured in the same run: the same three on an empty database, and /healthz (a
handful of trivial queries) on the populated one. The populated database is bench/page.py's data set
(events, 30 days of per-minute series, hourly buckets, snapshots, alerts, insights), plus four
worker heartbeat rows (present in both runs). Everything runs in-process through Django's test client on PostgreSQL.

    .venv/bin/python bench/ops.py                # 1,000,000 events, 100 scrapes each
    .venv/bin/python bench/ops.py --smoke        # 20,000 events, 20 scrapes each (seconds)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from io import StringIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import page  # noqa: E402  (database setup and the data set)

TOKEN = "bench-metrics-token-0123456789"  # noqa: S105 - a throwaway token for this process


def timed(fn, n: int) -> list[float]:
    for _ in range(2):
        fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def measure_all(client, n: int) -> dict[str, list[float]]:
    from django.core.management import call_command

    def metrics():
        resp = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
        assert resp.status_code == 200, resp.status_code

    def healthz():
        resp = client.get("/healthz")
        assert resp.status_code == 200, resp.content

    def status():
        call_command("pipeline_status", "--json", stdout=StringIO())

    return {"/healthz": timed(healthz, n), "/metrics": timed(metrics, n), "pipeline_status": timed(status, n)}


def show(label: str, results: dict[str, list[float]]) -> None:
    for name, times in results.items():
        print(
            f"  {label:<9} {name:<16} p50 {page.pct(times, 50):7.1f} ms  p95 {page.pct(times, 95):7.1f} ms",
            flush=True,
        )


def heartbeats(count: int) -> None:
    from django.utils import timezone

    from ingest.models import WorkerHeartbeat

    now = timezone.now()
    buckets = {"0.05": 10, "0.1": 40, "0.25": 90, "0.5": 100}
    WorkerHeartbeat.objects.bulk_create(
        WorkerHeartbeat(
            name=f"bench-{i}", backend="redis", started_at=now, last_seen=now, processed=1000 * i,
            batches=100, batch_seconds_sum=12.5, batch_buckets=buckets,
        )
        for i in range(count)
    )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--database", default="iops_bench_ops")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="20,000 events, 500 entities, 20 requests")
    args = parser.parse_args()
    if args.smoke:
        args.events, args.entities, args.requests = 20_000, 500, 20
    os.environ["METRICS_TOKEN"] = TOKEN
    page.setup_django(args.database)
    from django.test import Client

    client = Client()
    try:
        print(f"ops bench: PostgreSQL {args.database}, {args.requests} calls each, {os.cpu_count()} CPUs")
        heartbeats(4)  # fresh heartbeats: /healthz runs all four checks and answers 200
        print("baseline: no history (4 worker heartbeats only)")
        show("empty", measure_all(client, args.requests))
        print(f"populating: {args.events:,} events, {args.entities:,} entities")
        t0 = time.perf_counter()
        page.populate(events=args.events, entities=args.entities)
        print(f"  populated in {time.perf_counter() - t0:.1f} s")
        show("populated", measure_all(client, args.requests))
    finally:
        if not args.keep:
            page.drop_database(args.database)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
