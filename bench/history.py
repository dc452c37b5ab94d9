"""Batch cost against history size: the same 1,000-event batches through the real processing function
(`pipeline.batch.process_batch`) with 1,000,000 and then 10,000,000 events of history stored.

History goes straight into the tables with INSERT … SELECT FROM generate_series (raw events, sessions,
hourly and per-minute buckets built from them, supply–demand readings, snapshots, resolved alerts),
then the real `snapshots_refresh` and `alerts_evaluate` bring every entity to a steady state. The
marketplace stays the same (20,000 students, 2,000 tutors, 9 subjects × 5 regions) and the traffic
density too (33,333 events a day, about 1M in 30 days), so more history means a longer past: the
30-day windows hold the same rows while each student's sessions, each cell's readings and the raw
event table grow tenfold. (Raw events and buckets are kept in full, although retention would purge
events after EVENT_RETENTION_DAYS: the pessimistic case for table and index sizes.)

Measured sets: `--batches` batches of 1,000 simulated events (bench/aggregate.py's generator, 1 % late
by up to 3 days) at the current end of history, after `--warmup` batches. The first size is measured
twice (the second set is the noise control); each later set continues the timeline, with fresh ids
and the same seed, so every size sees the same batches. Each set starts after a VACUUM (ANALYZE) when
the server has autovacuum off (as this machine's does): the state autovacuum keeps on a production server. Its own database `iops_bench_history`.

    .venv/bin/python bench/history.py                          # 1M then 10M stored events
    .venv/bin/python bench/history.py --sizes 1000000 3000000  # what fits
    .venv/bin/python bench/history.py --smoke                  # 20k then 100k, seconds (CI)
"""

# ruff: noqa: S608  (SQL built from this script's own expressions and model metadata, never from input)
from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import aggregate  # noqa: E402  (the benchmark event generator and database helpers)

END = datetime(2026, 3, 1, tzinfo=UTC)  # history ends here; measured sets continue from it
WEIGHTS = {"session": 0.31, "ib": 0.12, "health": 0.12, "availability": 0.07, "supply": 0.07}
TIMEZONES = sorted(set(aggregate.REGIONS.values()))


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def sql_array(values: list[str]) -> str:
    return "ARRAY[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


class History:
    """SQL for segment [first, last] of each kind's items, item k lying (k - 0.5) / rate days before END
    (so segments can be loaded in any order and never overlap)."""

    def __init__(self, *, students: int, per_day: float):
        self.students = students
        self.tutors = max(10, students // 10)
        self.per_day = per_day

    def h(self, k: str, salt: int, mod: int) -> str:
        return f"(abs(hashint8extended({k}, {salt})) % {mod})"

    def stu(self, k: str, salt: int) -> str:
        return f"'stu_' || lpad({self.h(k, salt, self.students)}::text, 6, '0')"

    def tut(self, k: str, salt: int) -> str:
        return f"'tut_' || lpad({self.h(k, salt, self.tutors)}::text, 5, '0')"

    def at(self, kind: str, k: str = "k") -> str:
        seconds = 86400 / (self.per_day * WEIGHTS[kind])
        return f"('{END.isoformat()}'::timestamptz - make_interval(secs => ({k} - 0.5) * {seconds!r}))"

    def sessions(self, lo: int, hi: int, ts: str = "NULL") -> str:
        """`ts`: which of the session's times the `ts` column holds (for its start or completion event)."""
        ok = f"({self.h('k', 4, 100)} < 92)"
        started = f"{self.at('session')} - interval '60 minutes'"
        ts_sql = {"NULL": "NULL::timestamptz", "started_at": started, "completed_at": self.at("session")}[ts]
        return f"""(SELECT k, 'hs_' || k AS session_id, {ts_sql} AS ts, {self.stu("k", 1)} AS student_id,
                    {self.tut("k", 2)} AS tutor_id,
                    ({sql_array(aggregate.SUBJECTS)})[1 + {self.h("k", 3, len(aggregate.SUBJECTS))}] AS subject,
                    {started} AS started_at, {self.at("session")} AS completed_at,
                    {ok} AS ok, CASE WHEN {ok} THEN 45 ELSE 10 END AS duration,
                    CASE WHEN {ok} THEN 3 + {self.h("k", 5, 3)} ELSE 1 + {self.h("k", 5, 3)} END AS rating,
                    3 + {self.h("k", 6, 3)} AS tutor_rating
                FROM generate_series({lo}, {hi}) AS k) AS s"""

    def ib(self, lo: int, hi: int) -> str:
        return f"""(SELECT k, {self.stu("k", 7)} AS student_id, {self.at("ib")} AS ts,
                    ({sql_array(aggregate.REASONS)})[1 + {self.h("k", 8, len(aggregate.REASONS))}] AS reason,
                    {self.h("k", 9, 10)} < 7 AS resolved,
                    (ARRAY['low', 'low', 'medium', 'high'])[1 + {self.h("k", 10, 4)}] AS priority
                FROM generate_series({lo}, {hi}) AS k) AS s"""

    def health(self, lo: int, hi: int) -> str:
        return f"""(SELECT k, {self.stu("k", 11)} AS student_id, {self.at("health")} AS ts,
                    40 + {self.h("k", 12, 60)} AS score FROM generate_series({lo}, {hi}) AS k) AS s"""

    def availability(self, lo: int, hi: int) -> str:
        return f"""(SELECT k, {self.tut("k", 13)} AS tutor_id, {self.at("availability")} AS ts,
                    5 + {self.h("k", 14, 25)} AS hours FROM generate_series({lo}, {hi}) AS k) AS s"""

    def supply(self, lo: int, hi: int) -> str:
        regions = list(aggregate.REGIONS)
        return f"""(SELECT k, 'h_d' || k AS event_id, {self.at("supply")} AS ts,
                    ({sql_array(aggregate.SUBJECTS)})[1 + {self.h("k", 15, len(aggregate.SUBJECTS))}] AS subject,
                    ({sql_array(regions)})[1 + {self.h("k", 16, len(regions))}] AS region,
                    10 + {self.h("k", 17, 90)} AS demand, 10 + {self.h("k", 18, 90)} AS supply,
                    {self.h("k", 19, 40)} AS tutors, {self.h("k", 20, 200)} AS students
                FROM generate_series({lo}, {hi}) AS k) AS s"""


def insert_select(model, exprs: dict[str, str], source: str, *, conflict: bool = False) -> int:
    """INSERT INTO model's table SELECT exprs FROM source. Columns not given get the model default (so the
    script keeps working when other apps add columns with defaults)."""
    from django.db import connection

    columns, values, args = [], [], []
    for f in model._meta.concrete_fields:
        if f.primary_key and f.name not in exprs:
            continue
        columns.append(f'"{f.column}"')
        if f.name in exprs:
            values.append(exprs[f.name].replace("%", "%%"))
        elif f.has_default() or f.null:
            values.append("%s")
            args.append(f.get_db_prep_save(f.get_default(), connection) if f.has_default() else None)
        else:
            raise RuntimeError(f"{model.__name__}.{f.name} needs a value in the bench history")
    tail = " ON CONFLICT DO NOTHING" if conflict else ""
    # Table and columns come from model metadata, the expressions are this script's own.
    source = source.replace("%", "%%")
    sql = f'INSERT INTO "{model._meta.db_table}" ({", ".join(columns)}) SELECT {", ".join(values)} FROM {source}{tail}'  # noqa: S608
    with connection.cursor() as cur:
        cur.execute(sql, args)
        return cur.rowcount


class IndexesOff:
    """Drop a table's plain indexes (not those backing a constraint) for a bulk load, rebuild them after."""

    def __init__(self, tables: list[str]):
        self.tables = tables
        self.defs: list[tuple[str, str]] = []

    def __enter__(self):
        from django.db import connection

        with connection.cursor() as cur:
            cur.execute(
                """SELECT i.indexname, i.indexdef FROM pg_indexes i
                   WHERE i.schemaname = 'public' AND i.tablename = ANY(%s)
                     AND i.indexname NOT IN (SELECT c.conname FROM pg_constraint c)""",
                [self.tables],
            )
            self.defs = cur.fetchall()
            for name, _ in self.defs:
                cur.execute(f'DROP INDEX "{name}"')
        return self

    def __exit__(self, *exc):
        from django.db import connection

        with connection.cursor() as cur:
            for _, definition in self.defs:
                cur.execute(definition)


def load(hist: History, first: int, last: int) -> dict[str, int]:
    """History events number first..last (1 = the most recent), with every derived row."""
    from django.db import connection

    from alerts.models import Alert
    from ingest.models import Event
    from metrics.models import GlobalMinute, Session, StudentHourly, SupplyDemandReading, TutorHourly

    span = {kind: (int((first - 1) * w) + 1, int(last * w)) for kind, w in WEIGHTS.items()}
    counts: dict[str, int] = defaultdict(int)

    def step(name: str, fn) -> None:
        t0 = time.perf_counter()
        n = fn()
        counts[name] += n
        print(f"    {name:<24} {n:>11,} rows  {time.perf_counter() - t0:6.1f} s", flush=True)

    def events(kind: str, source: str, exprs: dict[str, str]) -> int:
        base = {"received_at": "ts", "processed_at": "ts", "occurred_at": "ts", "late": "false"}
        return insert_select(Event, {"student_id": "''", "tutor_id": "''", **base, **exprs}, source)

    s_lo, s_hi = span["session"]
    session_payload = (
        "jsonb_build_object('session_id', session_id, 'student_id', student_id, 'tutor_id', tutor_id, "
        "'subject', subject"
    )
    tables = [m._meta.db_table for m in (Event, Session, StudentHourly, TutorHourly, SupplyDemandReading)]
    with IndexesOff(tables):
        step(
            "sessions",
            lambda: insert_select(
                Session,
                {
                    "session_id": "session_id",
                    "student_id": "student_id",
                    "tutor_id": "tutor_id",
                    "subject": "subject",
                    "session_type": "'one_on_one'",
                    "started_at": "started_at",
                    "completed_at": "completed_at",
                    "duration_minutes": "duration",
                    "completed_successfully": "ok",
                    "student_rating": "rating",
                    "tutor_rating": "tutor_rating",
                    "started_event_id": "'h_s' || k",
                    "completed_event_id": "'h_c' || k",
                },
                hist.sessions(s_lo, s_hi),
            ),
        )
        common = {"student_id": "student_id", "tutor_id": "tutor_id"}
        step(
            "events: session_started",
            lambda: events(
                "session",
                hist.sessions(s_lo, s_hi, "started_at"),
                {
                    **common,
                    "event_id": "'h_s' || k",
                    "event_type": "'session_started'",
                    "payload": session_payload
                    + ", 'session_type', 'one_on_one', 'scheduled_duration_minutes', 60)",
                },
            ),
        )
        step(
            "events: session_completed",
            lambda: events(
                "session",
                hist.sessions(s_lo, s_hi, "completed_at"),
                {
                    **common,
                    "event_id": "'h_c' || k",
                    "event_type": "'session_completed'",
                    "payload": session_payload + ", 'actual_duration_minutes', duration, "
                    "'student_rating', rating, 'tutor_rating', tutor_rating, 'completed_successfully', ok)",
                },
            ),
        )
        lo, hi = span["ib"]
        step(
            "events: ib_call_logged",
            lambda: events(
                "ib",
                hist.ib(lo, hi),
                {
                    "student_id": "student_id",
                    "event_id": "'h_i' || k",
                    "event_type": "'ib_call_logged'",
                    "payload": "jsonb_build_object('student_id', student_id, 'call_id', 'hi_' || k, "
                    "'reason', reason, 'duration_seconds', 300, 'resolved', resolved, 'priority', priority)",
                },
            ),
        )
        lo_h, hi_h = span["health"]
        step(
            "events: health",
            lambda: events(
                "health",
                hist.health(lo_h, hi_h),
                {
                    "student_id": "student_id",
                    "event_id": "'h_h' || k",
                    "event_type": "'customer_health_update'",
                    "payload": "jsonb_build_object('student_id', student_id, 'health_score', score, "
                    "'churn_risk', CASE WHEN score < 50 THEN 'high' WHEN score < 70 THEN 'medium' ELSE 'low' END)",
                },
            ),
        )
        lo_a, hi_a = span["availability"]
        step(
            "events: availability",
            lambda: events(
                "availability",
                hist.availability(lo_a, hi_a),
                {
                    "tutor_id": "tutor_id",
                    "event_id": "'h_a' || k",
                    "event_type": "'tutor_availability_updated'",
                    "payload": "jsonb_build_object('tutor_id', tutor_id, 'available_hours_this_week', hours, "
                    "'subjects', jsonb_build_array('Mathematics'), 'timezone', 'America/New_York', "
                    "'accepts_instant_book', true)",
                },
            ),
        )
        lo_d, hi_d = span["supply"]
        step(
            "events: supply_demand",
            lambda: events(
                "supply",
                hist.supply(lo_d, hi_d),
                {
                    "event_id": "event_id",
                    "event_type": "'supply_demand_update'",
                    "payload": "jsonb_build_object('subject', subject, 'region', region, 'demand_score', demand, "
                    "'supply_score', supply, 'available_tutors', tutors, 'active_students', students)",
                },
            ),
        )
        step(
            "supply readings",
            lambda: insert_select(
                SupplyDemandReading,
                {
                    "event_id": "event_id",
                    "subject": "subject",
                    "region": "region",
                    "reported_at": "ts",
                    "demand_score": "demand",
                    "supply_score": "supply",
                    "available_tutors": "tutors",
                    "active_students": "students",
                    "balance_status": "''",
                    # The state after each reading, as the cells' snapshots below are built: balanced
                    # (the history's own hysteresis is not replayed; a late measured reading replays
                    # from the stored state of the reading before it, as in production).
                    "fold_status": "'balanced'",
                    "fold_since": "NULL",
                    "fold_ratio": "(demand + 1) / (supply + 1)",
                },
                hist.supply(lo_d, hi_d),
            ),
        )
        # Buckets: the sums the fold would have written, from the same rows.
        from metrics.services import IB_VALUES, SESSION_VALUES

        zero = dict.fromkeys(SESSION_VALUES + IB_VALUES, "0")
        started = {**zero, "sessions_started": "1"}
        completed = {
            **zero,
            "sessions_completed": "1",
            "sessions_unsuccessful": "(NOT ok)::int",
            "rating_sum": "rating",
            "rating_count": "1",
            "minutes": "duration",
        }
        ib = {
            **zero,
            "ib_calls": "1",
            "ib_unresolved": "(NOT resolved)::int",
            "ib_high_priority": "(priority = 'high')::int",
            **{f"ib_{r}": f"(reason = '{r}')::int" for r in aggregate.REASONS},
        }

        def buckets(key: str, values: list[str], parts: list[tuple[dict, str, str]]) -> str:
            selects = [
                f"SELECT {key} AS key, date_trunc('hour', {ts}) AS hour, "
                + ", ".join(f"{cols[v]} AS {v}" for v in values)
                + f" FROM {src}"
                for cols, ts, src in parts
            ]
            return (
                f"(SELECT key, hour, {', '.join(f'sum({v})::int AS {v}' for v in values)} "
                f"FROM ({' UNION ALL '.join(selects)}) AS u GROUP BY key, hour) AS b"
            )

        stu_values = SESSION_VALUES + IB_VALUES
        step(
            "student hourly",
            lambda: insert_select(
                StudentHourly,
                {"student_id": "key", "hour": "hour", **{v: v for v in stu_values}},
                buckets(
                    "student_id",
                    stu_values,
                    [
                        (started, "started_at", hist.sessions(s_lo, s_hi)),
                        (completed, "completed_at", hist.sessions(s_lo, s_hi)),
                        (ib, "ts", hist.ib(lo, hi)),
                    ],
                ),
                conflict=True,
            ),
        )
        step(
            "tutor hourly",
            lambda: insert_select(
                TutorHourly,
                {"tutor_id": "key", "hour": "hour", **{v: v for v in SESSION_VALUES}},
                buckets(
                    "tutor_id",
                    SESSION_VALUES,
                    [
                        (started, "started_at", hist.sessions(s_lo, s_hi)),
                        (completed, "completed_at", hist.sessions(s_lo, s_hi)),
                    ],
                ),
                conflict=True,
            ),
        )
    minute_parts = [
        ("started_at", "1", "0", "0", "0", hist.sessions(s_lo, s_hi)),
        ("completed_at", "0", "1", "(NOT ok)::int", "0", hist.sessions(s_lo, s_hi)),
        ("ts", "0", "0", "0", "1", hist.ib(lo, hi)),
        ("ts", "0", "0", "0", "0", hist.health(lo_h, hi_h)),
        ("ts", "0", "0", "0", "0", hist.availability(lo_a, hi_a)),
        ("ts", "0", "0", "0", "0", hist.supply(lo_d, hi_d)),
    ]
    union = " UNION ALL ".join(
        f"SELECT date_trunc('minute', {ts}) AS minute, {a} AS ss, {b} AS sc, {c} AS su, {d} AS ib FROM {src}"
        for ts, a, b, c, d, src in minute_parts
    )
    step(
        "global minutes",
        lambda: insert_select(
            GlobalMinute,
            {
                "minute": "minute",
                "received": "n",
                "events": "n",
                "sessions_started": "ss",
                "sessions_completed": "sc",
                "sessions_unsuccessful": "su",
                "ib_calls": "ib",
            },
            f"(SELECT minute, count(*)::int AS n, sum(ss)::int AS ss, sum(sc)::int AS sc, sum(su)::int AS su, "
            f"sum(ib)::int AS ib FROM ({union}) AS u GROUP BY minute) AS m",
            conflict=True,
        ),
    )
    # Past alerts, long resolved: one per 100 events of history, on real entities.
    n_alerts = max(1, (last - first + 1) // 100)
    types = ["low_health_score", "high_ib_call_frequency", "velocity_drop", "first_session_failed"]
    step(
        "resolved alerts",
        lambda: insert_select(
            Alert,
            {
                "type": f"({sql_array(types)})[1 + g % 4]",
                "fingerprint": f"({sql_array(types)})[1 + g % 4] || ':student:' || {hist.stu('g', 21)}",
                "severity": "'warning'",
                "status": "'resolved'",
                "entity_type": "'student'",
                "entity_id": hist.stu("g", 21),
                "message": "'past alert'",
                "details": "'{}'::jsonb",
                "first_seen": f"{hist.at('ib', f'(g + {first // 100})')} - interval '1 day'",
                "last_seen": hist.at("ib", f"(g + {first // 100})"),
                "closed_at": hist.at("ib", f"(g + {first // 100})"),
            },
            f"generate_series(1, {n_alerts}) AS g",
        ),
    )
    step("student session facts", session_facts)
    with connection.cursor() as cur:
        t0 = time.perf_counter()
        cur.execute("VACUUM ANALYZE")
        print(f"    {'vacuum analyze':<24} {'':>11}       {time.perf_counter() - t0:6.1f} s", flush=True)
    return counts


def session_facts() -> int:
    """Per-student first/last completed session (metrics.StudentSessionFacts, kept incrementally by the
    fold), rebuilt from every stored session as the fold would have left it."""
    from django.apps import apps
    from django.db import connection

    try:
        facts = apps.get_model("metrics", "StudentSessionFacts")
    except LookupError:
        return 0  # code before the facts table: snapshot refresh scans sessions instead
    with connection.cursor() as cur:
        cur.execute(f'TRUNCATE "{facts._meta.db_table}"')
    return insert_select(
        facts,
        {
            "student_id": "student_id",
            "first_completed_at": "completed_at",
            "first_session_id": "session_id",
            "first_ok": "completed_successfully AND (student_rating IS NULL OR student_rating > 2)",
            "last_completed_at": "last",
        },
        "(SELECT DISTINCT ON (student_id) student_id, completed_at, session_id, completed_successfully, "
        "student_rating, max(completed_at) OVER (PARTITION BY student_id) AS last FROM metrics_session "
        "WHERE completed_at IS NOT NULL ORDER BY student_id, completed_at, session_id) AS f",
    )


def entities(hist: History) -> None:
    """Snapshot rows for the whole marketplace, and the subject × region cells from the readings."""
    from metrics.models import StudentSnapshot, SubjectRegionSnapshot, TutorSnapshot

    now = f"'{END.isoformat()}'::timestamptz"
    insert_select(
        StudentSnapshot,
        {"student_id": "'stu_' || lpad(g::text, 6, '0')", "as_of": now, "updated_at": now},
        f"generate_series(0, {hist.students - 1}) AS g",
    )
    tz = f"({sql_array(TIMEZONES)})[1 + g % {len(TIMEZONES)}]"
    subjects = sql_array(aggregate.SUBJECTS)
    insert_select(
        TutorSnapshot,
        {
            "tutor_id": "'tut_' || lpad(g::text, 5, '0')",
            "timezone": tz,
            "subjects": f"jsonb_build_array(({subjects})[1 + g % 9], ({subjects})[1 + (g / 9) % 9])",
            "available_hours": "5 + g % 25",
            "as_of": now,
            "updated_at": now,
        },
        f"generate_series(0, {hist.tutors - 1}) AS g",
    )
    insert_select(
        SubjectRegionSnapshot,
        {
            "subject": "subject",
            "region": "region",
            "platform_demand_score": "demand_score",
            "platform_supply_score": "supply_score",
            "reported_at": "reported_at",
            "report_event_id": "event_id",
            "demand_supply_ratio": "(demand_score + 1) / (supply_score + 1)",
            "balance_status": "'balanced'",
            "updated_at": now,
        },
        "(SELECT DISTINCT ON (subject, region) * FROM metrics_supplydemandreading "
        "ORDER BY subject, region, reported_at DESC, event_id DESC) AS r",
    )


def steady_state(now: datetime) -> None:
    """Every entity refreshed and its rules evaluated once, by the real services (as the periodic sweep
    would have): measured batches then meet the alerts that this history already holds."""
    from django.db import transaction

    from alerts.services import alerts_evaluate
    from metrics.models import StudentSnapshot, SubjectRegionSnapshot, TutorSnapshot
    from metrics.services import snapshots_refresh, subject_regions_refresh

    t0 = time.perf_counter()
    with transaction.atomic():
        students = set(StudentSnapshot.objects.values_list("student_id", flat=True))
        tutors = set(TutorSnapshot.objects.values_list("tutor_id", flat=True))
        snapshots_refresh(students=students, tutors=tutors, now=now)
        subject_regions_refresh(now=now)
        cells = set(SubjectRegionSnapshot.objects.values_list("subject", "region"))
        raised = alerts_evaluate(students=students, tutors=tutors, subject_regions=cells, now=now)
    print(
        f"    {'steady state':<24} {len(raised):>11,} alerts  {time.perf_counter() - t0:6.1f} s "
        f"(snapshots_refresh + alerts_evaluate over {len(students) + len(tutors):,} entities)",
        flush=True,
    )


class SqlTimer:
    """Time per statement shape inside process_batch (connection.execute_wrapper). Statements sent on a
    raw psycopg cursor (iops/lib/sql.py's binary bulk path) are not seen."""

    NUM = re.compile(r"\$?\d+|%s|'[^']*'")

    def __init__(self):
        self.by_shape: dict[str, float] = defaultdict(float)
        self.total = 0.0

    def __call__(self, execute, sql, params, many, context):
        t0 = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            dt = time.perf_counter() - t0
            self.total += dt
            self.by_shape[self.NUM.sub("?", " ".join(sql.split()))[:90]] += dt


def measured_set(*, students: int, start: datetime, prefix: str, batches: int, warmup: int, size: int):
    """Process warmup + batches batches from `start`; returns the measured batch seconds, SQL seconds per
    batch, the SQL timer and where the timeline ends."""
    from django.db import connection

    from pipeline.batch import process_batch

    total = (warmup + batches) * size
    gen = aggregate.Generator(total=total, students=students, end=END, seed=7)
    gen.step = timedelta(days=1) / HISTORY.per_day
    gen.start = start
    times, sql = [], []
    timer = SqlTimer()
    for i, (now, batch) in enumerate(gen.batches(size)):
        for e in batch:
            e["event_id"] = prefix + e["event_id"]
            p = e["payload"]
            for key in ("session_id", "call_id"):
                if key in p:
                    p[key] = prefix + p[key]
        measured = i >= warmup
        before = timer.total
        t0 = time.perf_counter()
        with connection.execute_wrapper(timer) if measured else _nothing():
            process_batch(batch, now=now)
        if measured:
            times.append(time.perf_counter() - t0)
            sql.append(timer.total - before)
    return times, sql, timer, start + timedelta(days=total / HISTORY.per_day)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


HISTORY = History(students=20_000, per_day=1_000_000 / 30)


def vacuum_analyze(standin: aggregate.VacuumStandIn) -> None:
    """Before each measured set: what autovacuum would have done by then on a production server (this
    machine's PostgreSQL has it off). Without it the planner plans with whatever statistics the load
    left, and each set meets the dead row versions of the sets before it — the control set (the same
    history measured again) ran slower than the first for that reason alone."""
    seconds = standin.vacuum_now()
    if seconds is not None:
        print(f"    {'VACUUM (ANALYZE)':<24} {seconds:6.1f} s (server autovacuum is off)", flush=True)


def table_sizes() -> str:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        return cur.fetchone()[0]


def main() -> int:
    global HISTORY
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--batches", type=int, default=20, help="measured batches per set")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--students", type=int, default=20_000)
    parser.add_argument("--per-day", type=float, default=1_000_000 / 30, help="history density, events a day")
    parser.add_argument("--database", default="iops_bench_history")
    parser.add_argument("--keep", action="store_true", help="leave the database for inspection")
    parser.add_argument("--top", type=int, default=5, help="statements to list per measured set (by time)")
    parser.add_argument("--smoke", action="store_true", help="20,000 then 100,000 events, 2,000 students")
    parser.add_argument(
        "--eager-insights",
        action="store_true",
        help="score insights inline after each batch's commit, as the embedded one-process mode does "
        "(default: the worker role, where they are Celery tasks run elsewhere)",
    )
    args = parser.parse_args()
    # Worker role: new alerts' churn scoring is queued (in-memory broker here, never consumed), not run inline.
    os.environ["CELERY_TASK_ALWAYS_EAGER"] = "true" if args.eager_insights else "false"
    if args.smoke:
        args.sizes, args.students, args.batches, args.warmup = [20_000, 100_000], 2_000, 5, 2
    sizes = sorted(args.sizes)
    HISTORY = History(students=args.students, per_day=args.per_day)
    aggregate.setup_django(args.database)
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SET synchronous_commit = off")  # the load only; every measured batch still commits
        cur.execute("SET maintenance_work_mem = '256MB'")
    print(
        f"history bench: PostgreSQL {connection.cursor().connection.info.server_version}, database "
        f"{args.database}, {args.students:,} students, {HISTORY.tutors:,} tutors, "
        f"{args.per_day:,.0f} events/day of history, batches of {args.batch:,}, insights "
        f"{'scored inline (embedded mode)' if args.eager_insights else 'queued (worker role)'}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    results: list[tuple[str, int, list[float], list[float], SqlTimer]] = []
    standin = aggregate.VacuumStandIn(args.database, every=0)  # run by hand before each set
    clock = END
    loaded = 0
    try:
        for n, size in enumerate(sizes):
            print(
                f"  loading events {loaded + 1:,}..{size:,} of history (older than what is stored)",
                flush=True,
            )
            t0 = time.perf_counter()
            load(HISTORY, loaded + 1, size)
            if n == 0:
                entities(HISTORY)
            loaded = size
            with connection.cursor() as cur:
                cur.execute("SET synchronous_commit = on")
            steady_state(clock)
            print(
                f"  {size:,} events stored, database {table_sizes()}, loaded in {time.perf_counter() - t0:.0f} s"
            )
            for label in ["", " (control)"] if n == 0 else [""]:
                vacuum_analyze(standin)
                times, sql, timer, clock = measured_set(
                    students=args.students,
                    start=clock,
                    prefix=f"m{len(results)}-",
                    batches=args.batches,
                    warmup=args.warmup,
                    size=args.batch,
                )
                name = f"{size:,} stored{label}"
                results.append((name, size, times, sql, timer))
                print(
                    f"  {name:<28} batch median {statistics.median(times) * 1000:7.1f} ms  "
                    f"p95 {pct(times, 95) * 1000:7.1f} ms  (Django-cursor SQL {statistics.median(sql) * 1000:6.1f} ms)  "
                    f"load average {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
                for shape, seconds in sorted(timer.by_shape.items(), key=lambda kv: -kv[1])[: args.top]:
                    print(f"      {seconds / len(times) * 1000:7.1f} ms  {shape}", flush=True)
            with connection.cursor() as cur:
                cur.execute("SET synchronous_commit = off")
    finally:
        if not args.keep:
            aggregate.drop_database(args.database)
    first, last = results[0], results[-1]
    control = results[1]
    print()
    print(f"RESULT per-batch cost of {args.batch:,}-event batches through pipeline.batch.process_batch:")
    for name, _size, times, sql, _ in results:
        print(
            f"  {name:<28} median {statistics.median(times) * 1000:7.1f} ms  p95 {pct(times, 95) * 1000:7.1f} ms  "
            f"Django-cursor SQL {statistics.median(sql) * 1000:6.1f} ms"
        )
    print(
        f"  ratio {last[0]} / {first[0]}: median {statistics.median(last[2]) / statistics.median(first[2]):.2f}x, "
        f"p95 {pct(last[2], 95) / pct(first[2], 95):.2f}x "
        f"(control, same history twice: median {statistics.median(control[2]) / statistics.median(first[2]):.2f}x)"
    )
    grew = sorted(
        (
            (last[4].by_shape[k] - first[4].by_shape.get(k, 0.0)) / len(last[2]) * 1000,
            k,
        )
        for k in last[4].by_shape
    )[::-1][:5]
    print("  statements whose time per batch grew most:")
    for delta, shape in grew:
        print(f"    {delta:+7.1f} ms  {shape}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
