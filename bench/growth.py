"""Where a batch's time goes as a run's history grows: the statements whose time per 1,000-event batch
grew most between an early and a late point of the same run (bench/aggregate.py's generator, the real
process_batch, PostgreSQL at 127.0.0.1, its own database). The early point is the baseline.

    .venv/bin/python bench/growth.py                       # 300,000 events: 10 batches at 30k and at 290k
    .venv/bin/python bench/growth.py --events 1000000
    .venv/bin/python bench/growth.py --smoke               # 20,000 events (CI)
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import aggregate  # noqa: E402

MEASURED = 10  # batches per point (fewer in short runs)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--students", type=int, default=20_000)
    parser.add_argument("--database", default="iops_bench_growth")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--smoke", action="store_true", help="20,000 events, 2,000 students")
    aggregate.VacuumStandIn.add_argument(parser)
    args = parser.parse_args()
    if args.smoke:
        args.events, args.students = 20_000, 2_000
    batches = args.events // 1000
    measured = min(MEASURED, max(1, batches // 4))
    early, late = max(1, batches // 10), batches - measured
    if late < early + measured:
        parser.error("--events too small for two measured points")

    aggregate.setup_django(args.database)
    from django.db import connection

    from pipeline.batch import process_batch

    stats: dict[str, float] = defaultdict(float)

    def timer(execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            stats[re.sub(r"\s+", " ", sql)[:100]] += time.perf_counter() - started

    points: dict[int, tuple[float, dict[str, float]]] = {}
    gen = aggregate.Generator(
        total=args.events, students=args.students, end=datetime(2026, 3, 1, tzinfo=UTC), seed=1
    )
    wall, busy = time.monotonic(), 0.0
    vacuum = aggregate.VacuumStandIn(args.database, args.vacuum_every)
    print(vacuum.describe())
    vacuum.start()
    try:
        for i, (now, batch) in enumerate(gen.batches(1000), start=1):
            point = early if early <= i < early + measured else late if late <= i < late + measured else None
            if point is None:
                process_batch(batch, now=now)
            else:
                with connection.execute_wrapper(timer):
                    started = time.perf_counter()
                    process_batch(batch, now=now)
                    busy += time.perf_counter() - started
                if i == point + measured - 1:
                    points[point] = (busy / measured, dict(stats))
                    stats.clear()
                    busy = 0.0
            if i % 50 == 0:
                print(
                    f"  {i * 1000:>10,} events folded, {i * 1000 / (time.monotonic() - wall):,.0f} events/s",
                    flush=True,
                )
    finally:
        vacuum.stop()
        aggregate.drop_database(args.database)
    (t0, a), (t1, b) = points[early], points[late]
    print(
        f"\nRESULT batch of 1,000 events, means of {measured} batches, statement time from Django's cursors:"
    )
    print(
        f"  at {early * 1000:>9,} stored (baseline): {t0 * 1000:6.1f} ms per batch, SQL {sum(a.values()) / measured * 1000:6.1f} ms"
    )
    print(
        f"  at {late * 1000:>9,} stored:            {t1 * 1000:6.1f} ms per batch, SQL {sum(b.values()) / measured * 1000:6.1f} ms  ({t1 / t0:.2f}x)"
    )
    print("  statements whose time per batch grew most:")
    grown = sorted(((b.get(k, 0) - a.get(k, 0), k) for k in set(a) | set(b)), reverse=True)
    for delta, key in grown[: args.top]:
        print(
            f"    {delta / measured * 1000:+7.1f} ms  ({a.get(key, 0) / measured * 1000:6.1f} → {b.get(key, 0) / measured * 1000:6.1f})  {key}"
        )


if __name__ == "__main__":
    main()
