"""Scaling curve: events/s processed by 1, 2 and 4 Celery workers in one Redis consumer group.

For each worker count the script empties the database (its own `iops_scaling` on 127.0.0.1), publishes
the same pre-generated events to a fresh Redis stream, starts N real `celery -A iops worker` processes
(each runs the stream consumer bootstep) and times the drain from the first to the last stored event.
The 1-worker run is the baseline the others are compared with. (How batch cost grows with history is
measured by bench/history.py.) `--chart` draws the curve against the ideal linear line.

    .venv/bin/python bench/scaling.py                 # 40,000 events, workers 1 2 4
    .venv/bin/python bench/scaling.py --smoke         # 4,000 events, workers 1 2
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import aggregate  # noqa: E402  (the benchmark event generator)
import charts  # noqa: E402

DB = "iops_scaling"
REDIS = "redis://127.0.0.1:6379/0"


def worker_env(stream_key: str, *, batch_size: int = 2000) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB}",
            "REDIS_URL": REDIS,
            "CELERY_BROKER_URL": "redis://127.0.0.1:6379/14",
            "IOPS_STREAM": "redis",
            "IOPS_STREAM_KEY": stream_key,
            "IOPS_STREAM_GROUP": "bench",
            "CHANNEL_LAYER_PREFIX": f"bench-{stream_key}",
            "SECRET_KEY": "bench-only-not-a-secret-" + "x" * 40,
            "LOG_LEVEL": "WARNING",
            "WORKER_BATCH_SIZE": str(batch_size),
        }
    )
    return env


def run(workers: int, events: list[list[dict]], total: int, timeout: float, batch_size: int = 2000) -> float:
    from django.db import connection

    from ingest.models import Event
    from ingest.streams import RedisStream

    aggregate.reset_tables()
    key = f"iops-bench:{uuid.uuid4().hex}"
    stream = RedisStream(REDIS, key, "bench")
    stream._ensure_group()
    for batch in events:
        stream.publish(batch)
    env = worker_env(key, batch_size=batch_size)
    procs = [
        subprocess.Popen(
            [
                str(ROOT / ".venv/bin/celery"),
                "-A",
                "iops",
                "worker",
                "--pool",
                "solo",
                "-n",
                f"bench{i}@%h",
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                "WARNING",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for i in range(workers)
    ]
    first = last = None
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            count = Event.objects.count()
            now = time.monotonic()
            if count and first is None:
                first = now
            if count >= total:
                last = now
                break
            connection.close()
            time.sleep(0.2)
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        stream.client.delete(key, f"{key}:dead")
    if last is None or first is None:
        raise SystemExit(
            f"{workers} worker(s): only {Event.objects.count()} of {total} processed in {timeout:.0f} s"
        )
    return total / max(last - first, 1e-6)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--students", type=int, default=5_000)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=2000,
        help="WORKER_BATCH_SIZE of the workers (default: the setting's)",
    )
    parser.add_argument(
        "--chart",
        default=str(charts.CHARTS / "scaling.png"),
        help="scaling curve image (default bench/charts/scaling.png; '' for none)",
    )
    args = parser.parse_args()
    if args.smoke:
        args.events, args.workers, args.students = 4_000, [1, 2], 1_000
    aggregate.setup_django(DB)
    gen = aggregate.Generator(total=args.events, students=args.students, end=datetime.now(UTC))
    events = [batch for _now, batch in gen.batches(500)]
    for batch in events:
        for e in batch:
            e["received_at"] = datetime.now(UTC).isoformat()
    print(
        f"scaling: {args.events} events, {args.students} students, Redis stream, PostgreSQL, "
        f"{os.cpu_count()} cores"
    )
    results = {}
    try:
        for n in args.workers:
            results[n] = run(n, events, args.events, args.timeout, args.batch_size)
            ratio = results[n] / results[args.workers[0]]
            print(
                f"{n} worker(s): {results[n]:8.0f} events/s   ({ratio:.2f}x the {args.workers[0]}-worker baseline)"
                f"   load average {os.getloadavg()[0]:.2f}",
                flush=True,
            )
    finally:
        aggregate.drop_database(DB)
    if args.chart and not args.smoke and len(results) > 1:
        image = charts.scaling_chart(
            Path(args.chart),
            results,
            title=f"{args.events:,} events drained by N Celery workers "
            f"({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})",
        )
        print(f"chart: {image}")


if __name__ == "__main__":
    main()
