"""Aggregation throughput: simulated events folded in batches through the real processing function
(pipeline.batch.process_batch: store, fold, snapshot refresh, alert rules) into PostgreSQL, against a
per-event ORM baseline (get_or_create + save per event, as the prototype's per-event DynamoDB updates).

Uses its own database `iops_bench` on 127.0.0.1 (dropped and created by the script, dropped again at
the end unless --keep-db; --database to choose another). After-commit side effects (insight scoring,
inline with eager Celery as in the embedded worker; the live push) run inside process_batch: they count
in the rate and get their own line. Batches are WORKER_BATCH_SIZE events by default: what a stream
worker takes at once when events are waiting.

Issue 20's figures, all from one run and summed up at its end:
- the storage ceiling: COPY + INSERT … ON CONFLICT DO NOTHING of the same events;
- 1 worker: the events through process_batch in this process, with the per-phase table (wall, python
  CPU, PostgreSQL backend CPU per 1,000 events), the batch time at a tenth of the events stored and at
  the end (100k vs 1M by default), peak RSS; generation is outside the clock;
- 2 workers: from empty tables, the same events with 2 worker processes (bench/parallel.py: generated
  before the clock, batch i to worker i % 2 — with --partitioned each event to the worker of its
  entity, bench/parallel.py partition_of — both started together, JSON decode of each batch counted),
  rate = events stored / (last worker's end - start), CPU per 1,000 events of both workers and both
  backends, the largest worker's peak RSS; a worker that fails fails the run (non-zero exit);
- each run's rate over the ceiling (the bar: ≥ 0.33 with 2 workers), and the per-event ORM baseline.
- what grows with history: each phase's CPU per 1,000 events in the first and in the last tenth of
  the 1-worker run; `--detail` splits the refresh into its window sums, row reads and snapshot upserts.
A phase target that is gone or no longer called (product code moved on) fails the run with a message.
Profile with `py-spy record -- .venv/bin/python bench/aggregate.py --smoke` (or `--profile [first|last]`, cProfile of
the first or the last 50 batches;
BENCH_SORT / BENCH_FILTER choose its sort and filter, BENCH_PROFILE_OUT=FILE keeps the stats for pstats).

    .venv/bin/python bench/aggregate.py                       # 1,000,000 events, 1 then 2 workers
    .venv/bin/python bench/aggregate.py --batch 1000 --workers 1    # batches of 1,000, one worker only
    .venv/bin/python bench/aggregate.py --events 200000 --workers 2 # the 2-worker run only
    .venv/bin/python bench/aggregate.py --events 200000 --partitioned   # 2 workers: events by entity
    .venv/bin/python bench/aggregate.py --smoke               # 20,000 events, seconds (CI)
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from metrics.vocabulary import IB_REASONS  # noqa: E402 - after the path insert

SUBJECTS = [
    "Mathematics",
    "Physics",
    "Chemistry",
    "Biology",
    "English",
    "History",
    "Computer Science",
    "Spanish",
    "French",
]
REGIONS = {
    "northeast": "America/New_York",
    "southeast": "America/New_York",
    "midwest": "America/Chicago",
    "west": "America/Los_Angeles",
    "southwest": "America/Phoenix",
}
REASONS = list(IB_REASONS)  # the schema's reasons (metrics.vocabulary imports nothing of Django)
KINDS = ["start", "complete", "ib", "health", "availability", "supply"]
KIND_WEIGHTS = [31, 31, 12, 12, 7, 7]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class Generator:
    """Normalised events (the shape ingest validation produces) for a marketplace of `students`
    students and `students // 10` tutors over 30 days ending at `end`, built lazily batch by batch.
    About 1 % of events arrive late (up to 3 days old) and timestamps jitter ±10 minutes."""

    def __init__(
        self, *, total: int, students: int, end: datetime, seed: int = 1, live_rate: float = 0.0
    ) -> None:
        """`live_rate` (events/s): the last tenth of the events arrive at that rate of the simulated
        clock, after a month of history (the first nine tenths, spread over 30 days): what a busy
        marketplace pays per event, repeat ticks and insight caches applying, over full windows."""
        self.rng = random.Random(seed)
        self.total = total
        self.students = [f"stu_{i:06d}" for i in range(students)]
        self.tutors = [f"tut_{i:05d}" for i in range(max(10, students // 10))]
        self.tutor_info = {
            t: (self.rng.choice(list(REGIONS)), self.rng.sample(SUBJECTS, self.rng.randint(1, 3)))
            for t in self.tutors
        }
        self.by_subject = {
            s: [t for t in self.tutors if s in self.tutor_info[t][1]] or self.tutors for s in SUBJECTS
        }
        self.live = total - total * 9 // 10 if live_rate > 0 else 0  # events in the live tail
        self.live_rate = live_rate
        tail = timedelta(seconds=self.live / live_rate) if self.live else timedelta(0)
        self.start = end - timedelta(days=30) - tail
        self.step = timedelta(days=30) / (total - self.live)
        self.open: list[dict[str, Any]] = []
        self.n = 0

    def _event(self, i: int) -> dict[str, Any]:
        rng = self.rng
        ts = self.at(i) + timedelta(seconds=rng.uniform(-600, 600))
        if rng.random() < 0.01:
            ts -= timedelta(hours=rng.uniform(1, 72))
        kind = rng.choices(KINDS, KIND_WEIGHTS)[0]
        if kind == "complete" and not self.open:
            kind = "start"
        self.n += 1
        eid = f"evt_{self.n}"
        if kind == "start":
            subject = rng.choice(SUBJECTS)
            s = {
                "session_id": f"sess_{self.n}",
                "student_id": rng.choice(self.students),
                "tutor_id": rng.choice(self.by_subject[subject]),
                "subject": subject,
            }
            self.open.append(s)
            payload = {**s, "session_type": "one_on_one", "scheduled_duration_minutes": 60}
            etype = "session_started"
        elif kind == "complete":
            s = self.open.pop(rng.randrange(max(0, len(self.open) - 200), len(self.open)))
            ok = rng.random() < 0.92
            payload = {
                **s,
                "actual_duration_minutes": rng.choice([30, 45, 60, 90]) if ok else rng.randint(0, 20),
                "student_rating": rng.randint(3, 5) if ok else rng.randint(1, 3),
                "tutor_rating": rng.randint(3, 5),
                "completed_successfully": ok,
            }
            etype = "session_completed"
        elif kind == "ib":
            payload = {
                "student_id": rng.choice(self.students),
                "call_id": f"call_{self.n}",
                "reason": rng.choice(REASONS),
                "duration_seconds": rng.randint(60, 1800),
                "resolved": rng.random() < 0.7,
                "priority": rng.choices(["low", "medium", "high"], [50, 35, 15])[0],
            }
            etype = "ib_call_logged"
        elif kind == "health":
            score = round(min(100.0, max(0.0, rng.gauss(75, 15))), 1)
            payload = {
                "student_id": rng.choice(self.students),
                "health_score": score,
                "churn_risk": "high" if score < 50 else "medium" if score < 70 else "low",
            }
            etype = "customer_health_update"
        elif kind == "availability":
            tutor = rng.choice(self.tutors)
            region, subjects = self.tutor_info[tutor]
            payload = {
                "tutor_id": tutor,
                "available_hours_this_week": round(rng.uniform(5, 30), 1),
                "subjects": subjects,
                "timezone": REGIONS[region],
                "accepts_instant_book": True,
            }
            etype = "tutor_availability_updated"
        else:
            demand, supply = rng.uniform(10, 100), rng.uniform(10, 100)
            payload = {
                "subject": rng.choice(SUBJECTS),
                "region": rng.choice(list(REGIONS)),
                "demand_score": round(demand, 1),
                "supply_score": round(supply, 1),
                "available_tutors": rng.randint(0, 40),
                "active_students": rng.randint(0, 200),
            }
            etype = "supply_demand_update"
        return {"event_id": eid, "event_type": etype, "timestamp": ts.isoformat(), "payload": payload}

    def at(self, i: int) -> datetime:
        """Where event i sits on the simulated clock (before jitter and lateness)."""
        history = self.total - self.live
        if i <= history:
            return self.start + self.step * i
        return self.start + self.step * history + timedelta(seconds=(i - history) / self.live_rate)

    def batches(self, size: int, limit: int | None = None) -> Iterator[tuple[datetime, list[dict[str, Any]]]]:
        done = 0
        limit = self.total if limit is None else limit
        while done < limit:
            n = min(size, limit - done)
            batch = [self._event(done + k) for k in range(n)]
            done += n
            now = self.at(done) + timedelta(minutes=11)  # every timestamp is in the past
            received = now.isoformat()
            for e in batch:
                e["received_at"] = received
            yield now, batch


def setup_django(dbname: str) -> None:
    """A fresh bench database, migrated, and Django set up on it."""
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{dbname}"')
    connect_django(dbname)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def connect_django(dbname: str) -> None:
    """Django set up on an existing bench database (the worker processes of bench/parallel.py)."""
    os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{dbname}"
    os.environ.setdefault("SECRET_KEY", "bench-only-not-a-secret-" + "x" * 40)
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("IOPS_EMBEDDED_WORKER", "false")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iops.settings")
    import django

    django.setup()


def drop_database(dbname: str) -> None:
    import psycopg
    from django.db import connections

    connections.close_all()
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


class VacuumStandIn:
    """What autovacuum does on a production server, for a server that has it off (this machine's
    PostgreSQL is configured `autovacuum = off`): a second connection runs VACUUM (ANALYZE) over the
    database every `every` seconds (autovacuum's default naptime is 60 s). Without it nothing is
    analysed or vacuumed during a run: dead row versions of the hot tables (snapshots, active alerts)
    pile up, the visibility map stays empty and the planner plans with the statistics of an empty
    database — costs a production database does not have. The work runs on the same 2 cores as the
    batches, as autovacuum would."""

    def __init__(self, dbname: str, every: float):
        import threading

        import psycopg

        self.url = f"postgresql://postgres@127.0.0.1:5432/{dbname}"
        with psycopg.connect(self.url) as conn:
            self.server_on = conn.execute("SHOW autovacuum").fetchone()[0] == "on"
        self.every = 0 if self.server_on else every
        self.runs = 0
        self.seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True) if self.every else None

    @staticmethod
    def add_argument(parser) -> None:
        """The benches' `--vacuum-every` option."""
        parser.add_argument(
            "--vacuum-every",
            type=float,
            default=60,
            help="when the server has autovacuum off: VACUUM (ANALYZE) every N s in a second connection "
            "(autovacuum's work on a production server); 0 for the server as configured",
        )

    def describe(self) -> str:
        if self.server_on:
            return "server autovacuum: on"
        if not self.every:
            return "server autovacuum: off, no stand-in (--vacuum-every 0): the server as configured"
        return f"server autovacuum: off; stand-in: VACUUM (ANALYZE) of the database every {self.every:.0f} s"

    def vacuum_now(self) -> float | None:
        """One VACUUM (ANALYZE) of the database in a connection of its own, when the server has
        autovacuum off; returns its seconds (None when the server does this itself)."""
        import psycopg

        if self.server_on:
            return None
        t0 = time.perf_counter()
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE)")
        seconds = time.perf_counter() - t0
        self.seconds += seconds
        self.runs += 1
        return seconds

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.vacuum_now()

    def start(self) -> None:
        if self._thread:
            self._thread.start()

    def stop(self) -> None:
        """Stop and wait for a VACUUM in progress; safe to call more than once, or before start."""
        self._stop.set()
        if self._thread and self._thread.is_alive():
            self._thread.join()


class Phases:
    """Where a batch's time goes: wall time, this process's CPU and the PostgreSQL backend's CPU
    (from /proc/<backend pid>/stat: the server is local) per phase of process_batch, by wrapping the
    phase functions where process_batch and fold_events look them up. Nested phases are subtracted
    from their parent (fold excludes the snapshot refresh). The sum of both CPUs per event bounds what
    2 cores can do with this work however it is spread over processes: 2 / (CPU s per event)."""

    NAMES = ("store", "fold", "refresh", "rules", "routing", "after commit")
    # --detail: the refresh's statements on their own rows (subtracted from "refresh", as any nested phase).
    DETAIL = ("  window sums", "  row reads", "  snapshot upsert")

    def __init__(self, *, detail: bool = False) -> None:
        names = (*self.NAMES[:3], *(self.DETAIL if detail else ()), *self.NAMES[3:])
        self.totals = {n: [0.0, 0.0, 0.0] for n in names}  # wall, python cpu, pg cpu
        self.calls = dict.fromkeys(names, 0)
        self.targets: dict[str, str] = {}
        self._stack: list[list[float]] = []
        self._stat = None
        self._tick = os.sysconf("SC_CLK_TCK")

    def attach(self, backend_pid: int) -> None:
        self._stat = f"/proc/{backend_pid}/stat"

    def pg_cpu(self) -> float:
        if not self._stat:
            return 0.0
        with open(self._stat) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self._tick  # utime + stime

    def now(self) -> list[float]:
        return [time.perf_counter(), time.process_time(), self.pg_cpu()]

    def wrap(self, module, attr: str, name: str) -> None:
        """Time `module.attr` as phase `name`; a target that is gone (renamed or moved in the product
        code) ends the run with a message instead of a table that silently misses a phase."""
        inner = getattr(module, attr, None)
        if not callable(inner):
            raise SystemExit(
                f"bench/aggregate.py: phase {name!r}: {module.__name__}.{attr} no longer exists; "
                "update the phase targets in bench/aggregate.py (instrument)"
            )
        self.targets[name] = f"{module.__name__}.{attr}"

        def timed(*args, **kwargs):
            self.calls[name] += 1
            self._stack.append([0.0, 0.0, 0.0])  # time spent in nested phases
            start = self.now()
            try:
                return inner(*args, **kwargs)
            finally:
                spent = [b - a for a, b in zip(start, self.now(), strict=True)]
                nested = self._stack.pop()
                for i in range(3):
                    self.totals[name][i] += spent[i] - nested[i]
                    if self._stack:
                        self._stack[-1][i] += spent[i]

        setattr(module, attr, timed)

    def check(self) -> None:
        """Every phase ran: a target process_batch no longer calls (now looked up elsewhere) fails the run."""
        idle = [f"{name} ({self.targets[name]})" for name, n in self.calls.items() if not n]
        if idle:
            raise SystemExit(
                "bench/aggregate.py: phases never called during the run, their time is in no row: "
                + ", ".join(idle)
                + "; update the phase targets in bench/aggregate.py (instrument)"
            )

    def report(self, events: int, seconds: float) -> None:
        print("per 1,000 events, by phase:   wall ms   python cpu ms   postgres cpu ms")
        sums = [0.0, 0.0, 0.0]
        for name, t in self.totals.items():
            print(
                f"  {name:<14} {t[0] / events * 1e6:10.1f} {t[1] / events * 1e6:15.1f} {t[2] / events * 1e6:17.1f}"
            )
            sums = [a + b for a, b in zip(sums, t, strict=True)]
        print(
            f"  {'phases':<14} {sums[0] / events * 1e6:10.1f} {sums[1] / events * 1e6:15.1f} {sums[2] / events * 1e6:17.1f}"
        )
        print(f"  {'process_batch':<14} {seconds / events * 1e6:10.1f}")
        cpu = (sums[1] + sums[2]) / events
        if self._stat and cpu:
            print(
                f"2-core ceiling for this work: {2 / cpu:,.0f} events/s (both CPUs, {cpu * 1e6:.0f} ms per 1,000 events, "
                f"spread perfectly over 2 cores); PostgreSQL's share alone: {2 / (sums[2] / events):,.0f} events/s"
            )


def growth(phases: Phases, marks: dict, folded: int, live_rate: float = 0.0) -> None:
    """What grows with history: each phase's CPU (python + postgres) per 1,000 events in the run's first
    tenth of batches and in its last tenth (with --live-rate: the live tail)."""
    n_first, first = marks["first"]
    n_last, last = marks["last"]
    late_events = folded - n_last
    last_is = f" (the live tail, {live_rate:,.0f} events/s)" if live_rate else ""
    print(
        f"CPU vs history, by phase:  ms per 1,000 events (python + postgres) in the first "
        f"{n_first:,} events and in the last {late_events:,}{last_is}"
    )
    print(f"  {'phase':<18} {'first':>8} {'last':>8}  ratio")
    for name, total in phases.totals.items():
        a = (first[name][1] + first[name][2]) / n_first * 1e6
        b = (total[1] - last[name][1] + total[2] - last[name][2]) / late_events * 1e6
        ratio = f"{b / a:5.2f}x" if a >= 0.05 else "    -"
        print(f"  {name:<18} {a:8.1f} {b:8.1f}  {ratio}")


def reset_tables() -> None:
    """Empty everything a run writes, so the next run starts as the first did: events, metrics,
    alerts with what hangs off them (transitions, deliveries, labels), the claimed rate minutes,
    insights and the Bedrock budget. Configuration (channels, thresholds, silences, keys) stays. A run
    that found the previous run's insights or claimed minutes would skip scoring and rate checks."""
    from django.db import connection

    from alerts.models import Alert, RateMinute
    from ingest.models import Event
    from insights.models import BedrockBudget, Insight
    from metrics.services import metrics_clear

    metrics_clear()
    tables = [m._meta.db_table for m in (Event, Alert, RateMinute, Insight, BedrockBudget)]
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(connection.ops.quote_name(t) for t in tables)} CASCADE")


def baseline(gen: Generator, *, events: int) -> float:
    """The prototype's way: one get_or_create + save per counter row, per event, each committed."""
    from django.db.models import F

    from ingest.models import Event
    from metrics.models import Session, StudentHourly, StudentSnapshot, TutorHourly, TutorSnapshot
    from metrics.windows import floor_hour

    started = time.perf_counter()
    n = 0
    for now, batch in gen.batches(100, limit=events):
        for e in batch:
            p, ts = e["payload"], datetime.fromisoformat(e["timestamp"])
            Event.objects.create(
                event_id=e["event_id"],
                event_type=e["event_type"],
                occurred_at=ts,
                received_at=now,
                processed_at=now,
                student_id=p.get("student_id", ""),
                tutor_id=p.get("tutor_id", ""),
                payload=p,
            )
            if "session_id" in p:
                s, _ = Session.objects.get_or_create(
                    session_id=p["session_id"],
                    defaults={"student_id": p["student_id"], "tutor_id": p["tutor_id"]},
                )
                field = "started_at" if e["event_type"] == "session_started" else "completed_at"
                setattr(s, field, ts)
                s.save()
                col = "sessions_started" if field == "started_at" else "sessions_completed"
                for model, key in ((StudentHourly, "student_id"), (TutorHourly, "tutor_id")):
                    row, _ = model.objects.get_or_create(**{key: p[key], "hour": floor_hour(ts)})
                    setattr(row, col, getattr(row, col) + 1)
                    if p.get("student_rating"):
                        row.rating_sum += p["student_rating"]
                        row.rating_count += 1
                    row.save()
                snap, _ = TutorSnapshot.objects.get_or_create(
                    tutor_id=p["tutor_id"], defaults={"as_of": now, "updated_at": now}
                )
                TutorSnapshot.objects.filter(pk=snap.pk).update(
                    sessions_7d=F("sessions_7d") + 1, updated_at=now
                )
            if p.get("student_id"):
                snap, _ = StudentSnapshot.objects.get_or_create(
                    student_id=p["student_id"], defaults={"as_of": now, "updated_at": now}
                )
                if e["event_type"] == "ib_call_logged":
                    snap.ib_calls_7d += 1
                    snap.ib_calls_14d += 1
                    snap.ib_calls_30d += 1
                elif e["event_type"] == "session_completed":
                    snap.sessions_7d += 1
                    snap.sessions_14d += 1
                    snap.sessions_30d += 1
                elif e["event_type"] == "customer_health_update":
                    snap.platform_health_score = p["health_score"]
                snap.updated_at = now
                snap.save()
            n += 1
    return n / (time.perf_counter() - started)


def copy_ceiling(gen: Generator, *, batch: int) -> tuple[float, int]:
    """The floor of any design that stores every event exactly once (issue 20): per batch, COPY into a
    staging table, then INSERT … SELECT … ON CONFLICT (event_id) DO NOTHING RETURNING into a table shaped
    like ingest_event with all its indexes, one transaction per batch. Only the database work is timed
    (the events are generated outside the clock). Returns (events/s, events stored)."""
    from django.db import connection, transaction

    from ingest.models import Event
    from pipeline.batch import EVENT_COLUMNS, event_rows

    table = Event._meta.db_table
    cols = ", ".join(EVENT_COLUMNS)
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bench_ceiling")
        cursor.execute(f"CREATE TABLE bench_ceiling (LIKE {table} INCLUDING ALL)")
        cursor.execute(f"CREATE TEMP TABLE bench_staging AS SELECT {cols} FROM {table} WITH NO DATA")  # noqa: S608
    busy, stored = 0.0, 0
    for now, events in gen.batches(batch):
        rows = event_rows(events, now)  # the very rows process_batch stores
        t0 = time.perf_counter()
        with transaction.atomic(), connection.cursor() as cursor:
            raw = cursor.cursor  # psycopg's own cursor: COPY
            with raw.copy(f"COPY bench_staging ({cols}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute(
                f"INSERT INTO bench_ceiling ({cols}) SELECT {cols} FROM bench_staging "  # noqa: S608 - constants
                "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
            )
            stored += len(cursor.fetchall())
            cursor.execute("TRUNCATE bench_staging")
        busy += time.perf_counter() - t0
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE bench_ceiling")
        cursor.execute("DROP TABLE bench_staging")
    return stored / busy, stored


@dataclass
class Run:
    """What one pipeline run (1 worker: this process; N: bench/parallel.py) gives the summary."""

    workers: int
    rate: float  # events stored per second
    events: int  # events stored
    cpu_ms: float  # python + postgres CPU per 1,000 events
    peak_rss_mb: float  # the largest worker process's
    history: tuple[int, float, int, float] | None = None  # (stored, batch ms) at a tenth and at the end
    offered: int = 0  # events given to process_batch (fewer than --events after --max-seconds)


def instrument(*, detail: bool = False) -> tuple[Phases, dict[str, int]]:
    """The phase functions wrapped where process_batch and fold_events look them up, and the alerts
    scored after commit counted. After-commit side effects run inside process_batch (insight scoring is
    inline with eager Celery, as in the embedded worker): counted in the rate, and reported on their
    own line (their time is the "after commit" phase). `detail`: the refresh's window sums, row reads
    and snapshot upserts on rows of their own."""
    import metrics.services.db
    import metrics.services.snapshots
    import metrics.services.students
    import metrics.services.tutors
    import pipeline.batch
    import pipeline.effects

    phases = Phases(detail=detail)
    if detail:
        for module in (metrics.services.students, metrics.services.tutors):
            phases.wrap(module, "window_sums", "  window sums")
            phases.wrap(module, "rows_by_id", "  row reads")
        phases.wrap(metrics.services.db.SnapshotTable, "upsert", "  snapshot upsert")
    for module, attr, name in (
        (pipeline.batch, "_store_events", "store"),
        (pipeline.batch, "fold_events", "fold"),
        (metrics.services.snapshots, "snapshots_refresh", "refresh"),
        (pipeline.batch, "alerts_evaluate", "rules"),
        (pipeline.effects, "_route", "routing"),
        (pipeline.effects, "committed", "after commit"),
    ):
        phases.wrap(module, attr, name)
    scored = {"insights": 0}
    committed = pipeline.effects.committed

    def counted_committed(*, change, alert_ids, deliveries):
        scored["insights"] += len(alert_ids)
        committed(change=change, alert_ids=alert_ids, deliveries=deliveries)

    pipeline.effects.committed = counted_committed
    return phases, scored


def run_one_worker(
    args, *, end: datetime, vacuum, phases: Phases, scored, base_rate: float, ceiling: float
) -> Run:
    """The events through process_batch in this process, timed by phase (1 worker)."""
    from django.db import connection

    from pipeline.batch import process_batch

    gen = Generator(total=args.events, students=args.students, end=end, seed=1, live_rate=args.live_rate)
    checkpoints = {max(1, args.events // 10 // args.batch), args.events // args.batch}
    tenth = max(1, args.events // 10 // args.batch)
    n_total = -(-args.events // args.batch)
    marks: dict[str, tuple[int, dict[str, list[float]]]] = {}  # phase totals at the tenths' edges
    batch_times: list[float] = []
    folded = offered = 0
    busy = 0.0
    cpu = [0.0, 0.0]  # python, postgres: all of process_batch (the phases miss COMMIT, a few helpers)
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        phases.attach(cursor.fetchone()[0])
    from ingest.worker import settle_process

    settle_process()  # as a stream worker does before its loop
    wall = time.perf_counter()
    vacuum.start()
    profiled = range(1, 51) if args.profile == "first" else range(max(1, n_total - 49), n_total + 1)
    for i, (now, batch) in enumerate(gen.batches(args.batch), start=1):
        if args.max_seconds and time.perf_counter() - wall > args.max_seconds:
            print(f"  stopped after {args.max_seconds:.0f} s (--max-seconds)")
            break
        if profiler and i in profiled:
            profiler.enable()
        t0, cpu0, pg0 = phases.now()
        result = process_batch(batch, now=now)
        t1, cpu1, pg1 = phases.now()
        dt = t1 - t0
        cpu[0] += cpu1 - cpu0
        cpu[1] += pg1 - pg0
        if profiler and i in profiled:
            profiler.disable()
        busy += dt
        folded += result.new
        offered += len(batch)
        batch_times.append(dt)
        if i == tenth:
            marks["first"] = (folded, {k: list(v) for k, v in phases.totals.items()})
        if i == n_total - tenth:
            marks["last"] = (folded, {k: list(v) for k, v in phases.totals.items()})
        if i in checkpoints or i % 50 == 0:
            window = batch_times[-10:]
            print(
                f"  {folded:>9,} events stored: batch {statistics.median(window) * 1000:6.1f} ms "
                f"(median of last {len(window)}), {folded / busy:,.0f} events/s so far, peak RSS {rss_mb():.0f} MB",
                flush=True,
            )
    vacuum.stop()
    wall = time.perf_counter() - wall
    rate = folded / busy
    early = batch_times[max(0, tenth - 10) : tenth]
    late = batch_times[-10:]
    if profiler:
        import pstats

        if os.environ.get("BENCH_PROFILE_OUT"):
            profiler.dump_stats(os.environ["BENCH_PROFILE_OUT"])
        pstats.Stats(profiler).sort_stats(os.environ.get("BENCH_SORT", "cumulative")).print_stats(
            os.environ.get("BENCH_FILTER", "") or r"(metrics|ingest|alerts|iops)/.*\.py", 40
        )
    print()
    print(f"events folded:          {folded:,} in batches of {args.batch:,} ({args.students:,} students)")
    print(
        f"process_batch:          {rate:,.0f} events/s ({busy:.1f} s in process_batch, {wall:.1f} s wall incl. generation)"
    )
    print(
        f"baseline:               {base_rate:,.0f} events/s (per-event ORM, {args.baseline_events:,} events)"
    )
    print(f"ratio:                  {rate / base_rate:.1f}x")
    print(
        f"COPY ceiling:           {ceiling:,.0f} events/s (COPY + INSERT … ON CONFLICT DO NOTHING into a table "
        f"shaped like {'ingest_event'}, same events, same run); pipeline / ceiling {rate / ceiling:.2f} "
        f"(issue 20 bar: ≥ 0.33 with 2 workers)"
    )
    n_batches = len(batch_times)
    after_commit = phases.totals["after commit"][0]  # wall seconds
    print(
        f"of which after commit:  {after_commit / n_batches * 1000:.1f} ms per batch "
        f"({scored['insights'] / n_batches:.0f} alerts raised or updated scored inline per batch, live push); "
        f"without it {folded / (busy - after_commit):,.0f} events/s"
    )
    print(f"peak RSS:               {rss_mb():.0f} MB (this process: the one-worker run)")
    phases.report(folded, busy)
    if "first" in marks and "last" in marks and folded > marks["last"][0]:
        growth(phases, marks, folded, args.live_rate)
    if vacuum.runs:
        print(
            f"vacuum stand-in:        {vacuum.runs} runs, {vacuum.seconds:.1f} s in all (concurrent with the batches)"
        )
    print(
        f"batch time vs history:  {statistics.median(early) * 1000:.1f} ms at {tenth * args.batch:,} stored events, "
        f"{statistics.median(late) * 1000:.1f} ms at {folded:,} (medians of 10 batches)"
    )
    phases.check()
    return Run(
        workers=1,
        rate=rate,
        events=folded,
        cpu_ms=(cpu[0] + cpu[1]) / folded * 1e6,
        peak_rss_mb=rss_mb(),
        history=(tenth * args.batch, statistics.median(early) * 1000, folded, statistics.median(late) * 1000),
        offered=offered,
    )


def run_parallel(args, workers: int, *, end: datetime, one: Run | None, ceiling: float) -> Run:
    """The same events again, from empty tables, with `workers` processes (bench/parallel.py), the
    vacuum stand-in running alongside as in the one-worker run."""
    import parallel

    reset_tables()
    vacuum = VacuumStandIn(args.database, args.vacuum_every)
    vacuum.vacuum_now()  # the deleted rows' dead versions gone, as before the one-worker run
    vacuum.runs, vacuum.seconds = 0, 0.0  # count only the runs alongside the workers
    gen = Generator(total=args.events, students=args.students, end=end, seed=1, live_rate=args.live_rate)
    limit = one.offered if one else None  # as many events as the one-worker run took (--max-seconds)
    try:
        out = parallel.run(
            gen.batches(args.batch, limit=limit),
            workers=workers,
            database=args.database,
            on_start=vacuum.start,
            partitioned=args.partitioned,
        )
    finally:
        vacuum.stop()
    rate = out.events / out.seconds
    cpu = (out.python_cpu + out.pg_cpu) / out.events * 1e6
    versus = f", {rate / one.rate:.2f}x one worker" if one else ""
    routing = "events by entity, --partitioned" if args.partitioned else "batch i to worker i % N"
    print(
        f"{workers} workers:              {rate:,.0f} events/s ({out.events:,} events in {out.seconds:.1f} s{versus}; "
        f"{routing}); "
        f"pipeline / ceiling {rate / ceiling:.2f} (issue 20 bar: ≥ 0.33)"
    )
    print(
        f"  CPU per 1,000 events:  {out.python_cpu / out.events * 1e6:.1f} python + "
        f"{out.pg_cpu / out.events * 1e6:.1f} postgres = {cpu:.0f} ms (all workers and their backends; "
        f"JSON decode of the batches counted; 2-core ceiling at this cost {2e6 / cpu:,.0f} events/s); "
        f"peak RSS of a worker {out.peak_rss_mb:.0f} MB"
    )
    print(
        f"  cores busy:            {(out.python_cpu + out.pg_cpu) / out.seconds:.2f} on average (workers and their "
        f"backends); a worker's running statement waited on a lock in {out.lock_waits:.0%} of the samples "
        "(pg_stat_activity every 0.1 s)"
    )
    if out.deadlocks:
        print(
            f"  deadlocks:             {out.deadlocks} batches rolled back as a deadlock's victim, run again"
        )
    for query, n in out.lock_statements:
        print(f"    waiting {n:>4}x: {query}")
    if vacuum.runs:
        print(
            f"  vacuum stand-in:       {vacuum.runs} runs, {vacuum.seconds:.1f} s (concurrent with the workers)"
        )
    return Run(workers=workers, rate=rate, events=out.events, cpu_ms=cpu, peak_rss_mb=out.peak_rss_mb)


def summary(args, *, ceiling: float, base_rate: float, runs: list[Run]) -> None:
    """Issue 20's figures, together."""

    def row(label: str, text: str) -> None:
        print(f"  {label:<24} {text}")

    print()
    print(
        f"issue 20, this run ({args.events:,} events, {args.students:,} students, batches of {args.batch:,}):"
    )
    row("COPY ceiling", f"{ceiling:,.0f} events/s")
    for r in runs:
        bar = " (bar ≥ 0.33: " + ("met)" if r.rate / ceiling >= 0.33 else "missed)") if r.workers == 2 else ""
        row(
            f"pipeline, {r.workers} worker{'s' if r.workers > 1 else ''}",
            f"{r.rate:,.0f} events/s = {r.rate / ceiling:.2f} of the ceiling{bar}; "
            f"CPU {r.cpu_ms:.0f} ms per 1,000 events (python + postgres, all of process_batch); peak RSS {r.peak_rss_mb:.0f} MB",
        )
    one = next((r for r in runs if r.workers == 1), None)
    if one and one.history:
        at_tenth, early, at_end, late = one.history
        row(
            "batch cost vs history",
            f"{early:.1f} ms at {at_tenth:,} stored, {late:.1f} ms at {at_end:,} "
            f"({late / early:.2f}x; 1 worker, medians of 10 batches)",
        )
    versus = f"; pipeline 1 worker {one.rate / base_rate:.1f}x" if one else ""
    row("per-event ORM baseline", f"{base_rate:,.0f} events/s ({args.baseline_events:,} events){versus}")
    if runs:
        row(
            "peak RSS",
            f"{max(r.peak_rss_mb for r in runs):.0f} MB (the largest worker process; "
            "1 worker: this process, the baseline and the ceiling included)",
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--batch",
        type=int,
        default=0,
        help="events per batch (default: WORKER_BATCH_SIZE, what a stream worker takes at once under load)",
    )
    parser.add_argument(
        "--workers",
        default="1,2",
        help="pipeline runs, comma-separated numbers of workers: 1 is this process with the phase table "
        "and the batch time vs history; N > 1 the same events again from empty tables with N worker "
        "processes (bench/parallel.py)",
    )
    parser.add_argument("--students", type=int, default=20_000)
    parser.add_argument("--baseline-events", type=int, default=5000)
    parser.add_argument("--smoke", action="store_true", help="20,000 events, 1,000 for the baseline")
    parser.add_argument("--database", default="iops_bench")
    parser.add_argument(
        "--max-seconds", type=float, default=0, help="stop folding after this long and report what was done"
    )
    parser.add_argument("--keep-db", action="store_true", help="leave the database for inspection")
    VacuumStandIn.add_argument(parser)
    parser.add_argument(
        "--profile",
        nargs="?",
        const="first",
        choices=["first", "last"],
        help="cProfile 50 batches and print the top: the first 50 (default) or the last 50 (full windows, "
        "open alerts)",
    )
    parser.add_argument(
        "--live-rate",
        type=float,
        default=0,
        help="the last tenth of the events at this rate (events/s) of the simulated clock, after a month "
        "of history: a busy marketplace (default: the whole run spread over the month)",
    )
    parser.add_argument(
        "--detail", action="store_true", help="split the refresh: window sums, row reads, snapshot upserts"
    )
    parser.add_argument(
        "--partitioned",
        action="store_true",
        help="N > 1 workers: each event to worker partition_of(event, N) (its entity's CRC-32, as a stream "
        "partitioned by entity hands them out) instead of batch i to worker i %% N",
    )
    args = parser.parse_args()
    if args.smoke:
        args.events, args.baseline_events, args.students = 20_000, 1000, 2000
    try:
        args.worker_counts = sorted({int(n) for n in args.workers.split(",") if n.strip()})
    except ValueError:
        parser.error(f"--workers: comma-separated numbers, not {args.workers!r}")
    if any(n < 1 for n in args.worker_counts):
        parser.error("--workers: numbers of at least 1")
    return args


def main() -> None:
    args = parse_args()
    end = datetime(2026, 3, 1, tzinfo=UTC)
    setup_django(args.database)
    from django.conf import settings
    from django.db import connection

    args.batch = args.batch or settings.WORKER_BATCH_SIZE
    phases, scored = instrument(detail=args.detail)
    vacuum = VacuumStandIn(args.database, args.vacuum_every)
    try:
        print(
            f"PostgreSQL {connection.cursor().connection.info.server_version}, database {args.database}, "
            f"batches of {args.batch:,} (WORKER_BATCH_SIZE {settings.WORKER_BATCH_SIZE:,})"
        )
        print(vacuum.describe())
        base_rate = baseline(
            Generator(total=args.events, students=args.students, end=end, seed=2), events=args.baseline_events
        )
        print(
            f"baseline (per-event get_or_create + save): {args.baseline_events:,} events, {base_rate:,.0f} events/s"
        )
        reset_tables()
        ceiling, ceiling_events = copy_ceiling(
            Generator(total=args.events, students=args.students, end=end, seed=1, live_rate=args.live_rate),
            batch=args.batch,
        )
        print(
            f"COPY ceiling: {ceiling_events:,} events, {ceiling:,.0f} events/s (the same events, stored only)"
        )
        runs: list[Run] = []
        one = None
        if 1 in args.worker_counts:
            one = run_one_worker(
                args,
                end=end,
                vacuum=vacuum,
                phases=phases,
                scored=scored,
                base_rate=base_rate,
                ceiling=ceiling,
            )
            runs.append(one)
        for n in args.worker_counts:
            if n > 1:
                runs.append(run_parallel(args, n, end=end, one=one, ceiling=ceiling))
        summary(args, ceiling=ceiling, base_rate=base_rate, runs=runs)
    finally:
        vacuum.stop()
        if not args.keep_db:
            drop_database(args.database)


if __name__ == "__main__":
    main()
