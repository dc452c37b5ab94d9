"""The pipeline with several worker processes for bench/aggregate.py (issue 20's 2-worker figure).

The batches are generated before the clock into one JSON-lines file per worker (batch i goes to worker
i % N: two consumers of one Redis consumer group share batches the same way, so both write overlapping
entities; with --partitioned, event e goes to worker partition_of(e, N), the CRC-32 of its entity, as a
stream partitioned by entity with one consumer per partition would hand them out), then N processes of
this script (`--worker FILE`) connect, report ready, and start together on a line from the parent. Each
decodes its batches (as the stream worker decodes messages: counted) and runs
pipeline.batch.process_batch on them; the rate is the events stored over the time from the start line to
the last worker's end. Each worker reports its own CPU, its PostgreSQL backend's CPU (the server
is local: /proc/<pid>/stat) and its peak RSS; a sampler of pg_stat_activity counts how often a worker's
statement waits on a lock held by the other. A batch PostgreSQL rolls back as a deadlock victim is run
again after a short pause (counted: `deadlocks`); any other failure of a worker ends the run (SystemExit).
"""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULT = "RESULT "  # the line a worker ends with: its figures as JSON
# A batch chosen as a deadlock's victim is run again after a short random pause (growing with the
# attempts), up to this many attempts: an optimistic stand-in for the stream worker, which gets the
# batch again only after STREAM_CLAIM_IDLE_MS. Counted and reported.
DEADLOCK_ATTEMPTS = 20


def backend_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Outcome:
    events: int
    seconds: float  # from the start line to the last worker's end
    python_cpu: float  # all workers
    pg_cpu: float  # all their backends
    peak_rss_mb: float  # the largest worker's
    lock_waits: float  # of the samples of a worker backend busy on a statement, the share waiting on a lock
    lock_statements: list[tuple[str, int]]  # the statements most often found waiting, with their counts
    deadlocks: int  # batches PostgreSQL rolled back as a deadlock's victim (each run again)


class LockSampler:
    """Every `every` seconds, in a connection of its own: how many of the bench database's other client
    backends run a statement, and how many of those wait on a lock (two workers writing the same
    entities' rows). Cheap: one query on pg_stat_activity per sample."""

    QUERY = (
        "SELECT wait_event_type = 'Lock', left(regexp_replace(query, '\\s+', ' ', 'g'), 70) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend' "
        "AND state = 'active' AND query NOT ILIKE 'VACUUM%'"
    )

    def __init__(self, database: str, every: float = 0.1):
        import threading

        self.url = f"postgresql://postgres@127.0.0.1:5432/{database}"
        self.every = every
        self.waiting = self.active = 0
        self.statements: Counter[str] = Counter()  # the statements found waiting, by their start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.wait(self.every):
                for waiting, query in conn.execute(self.QUERY).fetchall():
                    self.active += 1
                    if waiting:
                        self.waiting += 1
                        self.statements[query] += 1

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> float:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        return self.waiting / self.active if self.active else 0.0


def partition_of(event: dict[str, Any], partitions: int) -> int:
    """The partition of an event's entity (ingest.schemas.partition_key: student, else tutor, else the
    subject × region cell), as a stream partitioned by entity would place it: CRC-32 of the key, the
    same in every process (Python's hash() of a str is salted per process)."""
    from ingest.schemas import partition_key

    return zlib.crc32(partition_key(event).encode("utf-8", "backslashreplace")) % partitions


def pregenerate(
    batches: Iterable[tuple[datetime, list[dict[str, Any]]]],
    workers: int,
    folder: Path,
    *,
    partitioned: bool = False,
) -> list[Path]:
    """One JSON-lines file of batches per worker. Round-robin (default): batch i to worker i % N, as
    one Redis consumer group shares batches. `partitioned`: each event to worker partition_of(event, N),
    in batches of the generated batches' size, each with the clock of the batch that filled it."""
    files = [folder / f"worker{k}.jsonl" for k in range(workers)]
    handles = [f.open("w") for f in files]

    def write(k: int, now: datetime, events: list[dict[str, Any]]) -> None:
        handles[k].write(json.dumps({"now": now.isoformat(), "events": events}) + "\n")

    try:
        if not partitioned:
            for i, (now, events) in enumerate(batches):
                write(i % workers, now, events)
            return files
        pending: list[list[dict[str, Any]]] = [[] for _ in range(workers)]
        size, last = 0, None
        for now, events in batches:
            size, last = max(size, len(events)), now
            for e in events:
                k = partition_of(e, workers)
                pending[k].append(e)
                if len(pending[k]) >= size:
                    write(k, now, pending[k])
                    pending[k] = []
        for k, rest in enumerate(pending):
            if rest and last is not None:
                write(k, last, rest)
    finally:
        for h in handles:
            h.close()
    return files


def run(
    batches: Iterable[tuple[datetime, list[dict[str, Any]]]],
    *,
    workers: int,
    database: str,
    on_start: Callable[[], None] | None = None,
    partitioned: bool = False,
) -> Outcome:
    """Process these batches with `workers` processes on the (migrated, empty) bench database;
    `on_start` runs in this process once the workers are told to start (the vacuum stand-in). A worker
    that fails stops the others and the run: SystemExit, non-zero. `partitioned`: events go to workers by
    entity (pregenerate), not batch by batch."""
    with tempfile.TemporaryDirectory() as tmp:
        files = pregenerate(batches, workers, Path(tmp), partitioned=partitioned)
        procs = [
            subprocess.Popen(
                [sys.executable, str(Path(__file__)), "--worker", str(f), "--database", database],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for f in files
        ]
        try:
            for k, p in enumerate(procs):
                if _line(p, "ready") is None:
                    raise SystemExit(f"bench worker {k} did not start (exit {p.wait()}; its stderr above)")
            start = time.time()
            for p in procs:
                assert p.stdin is not None
                p.stdin.write("go\n")
                p.stdin.close()
            locks = LockSampler(database)
            locks.start()
            if on_start:
                on_start()
            try:
                _wait(procs)
            finally:
                lock_waits = locks.stop()
            results = []
            for k, p in enumerate(procs):
                line = _line(p, RESULT)
                if line is None:
                    raise SystemExit(f"bench worker {k} ended without its result")
                results.append(json.loads(line[len(RESULT) :]))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    return Outcome(
        events=sum(r["events"] for r in results),
        seconds=max(r["finished"] for r in results) - start,
        python_cpu=sum(r["python_cpu"] for r in results),
        pg_cpu=sum(r["pg_cpu"] for r in results),
        peak_rss_mb=max(r["peak_rss_mb"] for r in results),
        lock_waits=lock_waits,
        lock_statements=locks.statements.most_common(3),
        deadlocks=sum(r["deadlocks"] for r in results),
    )


def _line(proc: subprocess.Popen, prefix: str) -> str | None:
    """The first line of the worker's output that starts with `prefix` (None at its end)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(prefix):
            return line.strip()
    return None


def _wait(procs: list[subprocess.Popen]) -> None:
    """Until every worker has exited; the first one to fail ends the run (the others are killed by
    the caller). Each worker times itself: how soon this loop notices does not count."""
    while True:
        codes = [p.poll() for p in procs]
        for k, code in enumerate(codes):
            if code:
                raise SystemExit(f"bench worker {k} failed (exit {code}; its traceback above)")
        if all(code == 0 for code in codes):
            return
        time.sleep(0.05)


def worker(path: str, database: str) -> None:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    from aggregate import connect_django

    connect_django(database)
    from django.db import OperationalError, connection
    from psycopg.errors import DeadlockDetected

    from ingest.worker import settle_process
    from pipeline.batch import process_batch

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    settle_process()  # as a stream worker does before its loop
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("bench worker: no start line")
    cpu0, pg0 = time.process_time(), backend_cpu(backend)
    stored = deadlocks = 0
    with open(path) as f:
        for line in f:
            batch = json.loads(line)
            for attempt in range(DEADLOCK_ATTEMPTS):
                try:
                    stored += process_batch(batch["events"], now=datetime.fromisoformat(batch["now"])).new
                    break
                except OperationalError as exc:  # rolled back whole: the batch is simply run again
                    if not isinstance(exc.__cause__, DeadlockDetected) or attempt + 1 == DEADLOCK_ATTEMPTS:
                        raise
                    deadlocks += 1
                    time.sleep(random.uniform(0, 0.05 * (attempt + 1)))  # out of step with the other
    finished = time.time()
    result = {
        "events": stored,
        "deadlocks": deadlocks,
        "finished": finished,
        "python_cpu": time.process_time() - cpu0,
        "pg_cpu": backend_cpu(backend) - pg0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(RESULT + json.dumps(result), flush=True)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(
        description="one worker of bench/parallel.py (started by bench/aggregate.py)"
    )
    parser.add_argument("--worker", required=True)
    parser.add_argument("--database", required=True)
    args = parser.parse_args()
    worker(args.worker, args.database)
