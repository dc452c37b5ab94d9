"""Alert evaluation per 1,000-event batch: the batched path (alerts.services.alerts_evaluate: one SELECT,
one locked SELECT of the alerts it writes, one UPDATE, bulk INSERTs) against the per-candidate baseline
measured on the same batches (alert_raise per candidate: a SELECT … FOR UPDATE and an UPDATE or INSERT +
transition each).

Each measured batch is stored and folded once; the baseline runs in a savepoint that is rolled back, then
the batched path runs on the same state and commits. Uses its own database (dropped afterwards).

    .venv/bin/python bench/alerts_eval.py              # 30,000 warm-up events, 20 measured batches
    .venv/bin/python bench/alerts_eval.py --smoke      # seconds (CI)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aggregate import Generator, drop_database, setup_django  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--warmup", type=int, default=30_000, help="events processed before measuring")
    parser.add_argument("--batches", type=int, default=20, help="measured batches")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--students", type=int, default=3000)
    parser.add_argument("--database", default="iops_bench_alerts")
    parser.add_argument("--smoke", action="store_true", help="2,000 warm-up events, 3 batches")
    args = parser.parse_args()
    if args.smoke:
        args.warmup, args.batches = 2000, 3
    setup_django(args.database)
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from alerts.models import Alert
    from alerts.services import _candidates, alert_raise, alerts_evaluate
    from metrics.services import fold_events
    from pipeline.batch import _store_events, process_batch

    try:
        total = args.warmup + args.batches * args.batch_size
        gen = Generator(total=total, students=args.students, end=datetime(2026, 3, 20, tzinfo=UTC))
        batches = gen.batches(args.batch_size)
        started = time.perf_counter()
        for _ in range(args.warmup // args.batch_size):
            now, events = next(batches)
            process_batch(events, now=now)
        print(
            f"warm-up: {args.warmup} events in {time.perf_counter() - started:.1f}s, "
            f"{Alert.objects.count()} alerts",
            flush=True,
        )

        class Rollback(Exception):
            pass

        rows = []
        for _ in range(args.batches):
            now, events = next(batches)
            with transaction.atomic():
                t0 = time.perf_counter()
                touched = fold_events(_store_events(events, now), now=now)
                fold_s = time.perf_counter() - t0
                connection.queries_log.clear()  # the log is a bounded deque: keep counts exact
                try:
                    with transaction.atomic():
                        with CaptureQueriesContext(connection) as base_q:
                            t0 = time.perf_counter()
                            cands, _ = _candidates(
                                students=touched.students,
                                tutors=touched.tutors,
                                subject_regions=touched.subject_regions,
                                now=now,
                            )
                            for c in cands:
                                alert_raise(candidate=c, now=now)
                            base_s = time.perf_counter() - t0
                        raise Rollback
                except Rollback:
                    pass
                connection.queries_log.clear()
                with CaptureQueriesContext(connection) as new_q:
                    t0 = time.perf_counter()
                    raised = alerts_evaluate(touched=touched, now=now)
                    new_s = time.perf_counter() - t0
            base_n = base_q.final_queries - base_q.initial_queries  # counted at exit: the log is cleared
            new_n = new_q.final_queries - new_q.initial_queries
            rows.append((fold_s, base_s, base_n, new_s, new_n, len(cands), len(raised)))
        med = lambda i: statistics.median(r[i] for r in rows)  # noqa: E731
        print(
            f"{args.batches} batches of {args.batch_size} events (medians); {Alert.objects.count()} alerts at the end"
        )
        print(f"  candidates per batch           {med(5):.0f}")
        print(f"  store + fold (not alerts)      {med(0) * 1000:.0f} ms")
        print(f"  baseline per-candidate alerts  {med(1) * 1000:.0f} ms, {med(2):.0f} queries")
        print(f"  batched alerts_evaluate        {med(3) * 1000:.0f} ms, {med(4):.0f} queries")
        share_base = med(1) / (med(0) + med(1))
        share_new = med(3) / (med(0) + med(3))
        print(f"  alert share of the batch       baseline {share_base:.0%} → batched {share_new:.0%}")
        print(f"  speed-up of alert evaluation   {med(1) / med(3):.1f}x")
    finally:
        drop_database(args.database)


if __name__ == "__main__":
    main()
