"""Dashboard page cost: server time to render `/` and its number of database queries, with a large
history (1,000,000 stored events, 10,000 entities) against the same page on an empty database
measured first in the same run (the baseline: what the page costs before any data exists).

The data set goes straight into the tables with INSERT … SELECT FROM generate_series (raw events,
per-minute series, hourly buckets, sessions, snapshots, alerts, insights, supply–demand readings),
not through the pipeline: this measures reads. Its own PostgreSQL database `iops_bench_page` on
127.0.0.1 (dropped and created). Requests go through Django's test client in this process (no
network): middleware, session, selectors, templates.

    .venv/bin/python bench/page.py                  # 1,000,000 events, 10,000 entities, 100 requests
    .venv/bin/python bench/page.py --smoke          # 20,000 events, 500 entities (seconds; CI)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SUBJECTS = ["Mathematics", "Physics", "Chemistry", "Biology", "English", "History", "Computer Science", "Spanish",
            "French", "Geography", "Economics", "Art", "Music", "German", "Statistics", "Calculus", "Writing",
            "Latin", "Psychology", "Coding"]  # fmt: skip
REGIONS = ["northeast", "southeast", "midwest", "west", "southwest"]
PAGES = {"/ (24h)": "/", "/ (7d, htmx swap)": "/?range=7d", "/ (30d)": "/?range=30d"}


def setup_django(dbname: str) -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{dbname}"')
    os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{dbname}"
    os.environ.setdefault("SECRET_KEY", "bench-only-not-a-secret-" + "x" * 40)
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("IOPS_EMBEDDED_WORKER", "false")
    os.environ.setdefault("ALLOWED_HOSTS", "testserver")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iops.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", "--noinput", verbosity=0)


def drop_database(dbname: str) -> None:
    import psycopg
    from django.db import connections

    connections.close_all()
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def insert_series(model, count: int, exprs: dict[str, str]) -> float:
    """INSERT … SELECT over generate_series(1, count) AS g. Columns not given get their model default
    (so the script keeps working when other apps add columns with defaults)."""
    from django.db import connection

    t0 = time.perf_counter()
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
            raise RuntimeError(f"{model.__name__}.{f.name} needs a value in the bench data set")
    # Table and columns come from model metadata, the values are this script's fixed expressions.
    table, cols, vals = model._meta.db_table, ", ".join(columns), ", ".join(values)
    sql = f'INSERT INTO "{table}" ({cols}) SELECT {vals} FROM generate_series(1, {int(count)}) AS g'  # noqa: S608
    with connection.cursor() as cur:
        cur.execute(sql, args)
    return time.perf_counter() - t0


def populate(*, events: int, entities: int) -> dict[str, int]:
    from django.db import connection

    from alerts.models import Alert
    from ingest.models import Event
    from insights.models import Insight
    from metrics.models import (
        GlobalMinute,
        Session,
        StudentHourly,
        StudentSnapshot,
        SubjectRegionSnapshot,
        SupplyDemandReading,
        TutorHourly,
        TutorSnapshot,
    )

    places = min(len(SUBJECTS) * len(REGIONS), max(5, entities // 100))
    tutors = max(10, int(entities * 0.19))
    students = entities - tutors - places
    minutes = 30 * 24 * 60
    now = "date_trunc('minute', now())"
    hour = "date_trunc('hour', now())"
    stu = f"'stu_' || lpad(((g - 1) % {students})::text, 6, '0')"
    tut = f"'tut_' || lpad(((g - 1) % {tutors})::text, 5, '0')"
    subject = f"(ARRAY{SUBJECTS!r})[1 + ((g - 1) % {len(SUBJECTS)})]"
    region = f"(ARRAY{REGIONS!r})[1 + ((g - 1) / {len(SUBJECTS)}) % {len(REGIONS)}]"
    counts: dict[str, int] = {}

    def step(name: str, model, n: int, exprs: dict[str, str]) -> None:
        seconds = insert_series(model, n, exprs)
        counts[name] = n
        print(
            f"  {name:<22} {n:>10,} rows  {seconds:6.1f} s  ({n / max(seconds, 1e-9):,.0f} rows/s)",
            flush=True,
        )

    types = "(ARRAY['session_started','session_completed','ib_call_logged','customer_health_update'," \
            "'tutor_availability_updated','supply_demand_update'])[1 + (g % 6)]"  # fmt: skip
    ago = f"{now} - make_interval(mins => (g % {minutes}))"
    step("events", Event, events, {
        "event_id": "'ev_' || g", "event_type": types, "occurred_at": ago, "received_at": ago,
        "processed_at": ago, "student_id": stu, "tutor_id": tut, "late": "false",
        "payload": "jsonb_build_object('n', g)",
    })  # fmt: skip
    per_minute = max(1, events // minutes)
    step("global minutes", GlobalMinute, minutes, {
        "minute": f"{now} - make_interval(mins => g - 1)", "received": str(per_minute), "events": str(per_minute),
        "sessions_started": f"{max(1, per_minute // 3)} + g % 3", "sessions_completed": f"{max(1, per_minute // 3)}",
        "sessions_unsuccessful": "(g % 7 = 0)::int", "ib_calls": f"{max(1, per_minute // 8)} + g % 2",
    })  # fmt: skip
    sessions = events // 3
    started = f"now() - make_interval(mins => (g * 7) % {minutes})"
    step("sessions", Session, sessions, {
        "session_id": "'sess_' || g", "student_id": stu, "tutor_id": tut, "subject": subject,
        "session_type": "'one_on_one'", "started_at": started,
        "completed_at": f"{started} + interval '50 minutes'", "duration_minutes": "50",
        "completed_successfully": "(g % 9 <> 0)", "student_rating": "1 + g % 5", "tutor_rating": "1 + g % 5",
        "started_event_id": "'ev_s' || g", "completed_event_id": "'ev_c' || g",
    })  # fmt: skip
    # (student, hour) pairs are unique: hour index 9k + (s + students*k) % 9 for student s, round k.
    buckets = int(events * 0.6)
    hour_idx = f"(((g - 1) / {students}) * 9 + ((g - 1) % 9)) % 720"
    step("student hourly", StudentHourly, buckets, {
        "student_id": stu, "hour": f"{hour} - make_interval(hours => {hour_idx})",
        "sessions_started": "g % 2", "sessions_completed": "g % 2", "rating_sum": "4 * (g % 2)",
        "rating_count": "g % 2", "minutes": "50 * (g % 2)", "ib_calls": "(g % 5 = 0)::int",
        "ib_technical_problem": "(g % 10 = 0)::int", "ib_scheduling_issue": "(g % 10 = 5)::int",
    })  # fmt: skip
    step("tutor hourly", TutorHourly, buckets // 3, {
        "tutor_id": tut,
        "hour": f"{hour} - make_interval(hours => (((g - 1) / {tutors}) * 9 + ((g - 1) % 9)) % 720)",
        "sessions_started": "1", "sessions_completed": "1", "rating_sum": "4", "rating_count": "1", "minutes": "50",
    })  # fmt: skip
    components = (
        "jsonb_build_object('engagement', jsonb_build_object('score', g % 100, 'weight', 0.3, 'why', 'bench'),"
        " 'recency', jsonb_build_object('score', 100 - g % 100, 'weight', 0.2, 'why', 'bench'))"
    )
    step("student snapshots", StudentSnapshot, students, {
        "student_id": "'stu_' || lpad((g - 1)::text, 6, '0')", "sessions_7d": "g % 4", "sessions_14d": "g % 7",
        "sessions_30d": "g % 12", "ib_calls_14d": "g % 5", "health_score": "(g * 37) % 100",
        "platform_health_score": "(g * 53) % 100", "health_components": components,
        "first_session_at": "now() - make_interval(hours => g % 720)", "first_session_ok": "(g % 6 <> 0)",
        "as_of": "now()", "updated_at": "now() - make_interval(mins => g % 2000)",
    })  # fmt: skip
    step("tutor snapshots", TutorSnapshot, tutors, {
        "tutor_id": "'tut_' || lpad((g - 1)::text, 5, '0')", "sessions_7d": "g % 15", "avg_rating": "3 + (g % 20) / 10.0",
        "rated_sessions": "g % 30", "utilisation": "(g % 100) / 100.0", "burnout_risk": "(g % 90) / 100.0",
        "as_of": "now()", "updated_at": "now()",
    })  # fmt: skip
    step("subject × region", SubjectRegionSnapshot, places, {
        "subject": subject, "region": region, "platform_demand_score": "(g * 13) % 100",
        "platform_supply_score": "(g * 29) % 100", "balance_status": "'balanced'", "updated_at": "now()",
    })  # fmt: skip
    step("supply readings", SupplyDemandReading, places * 720, {
        "event_id": "'sd_' || g", "subject": subject, "region": region,
        "reported_at": "now() - make_interval(hours => (g - 1) / 100)", "demand_score": "(g * 13) % 100",
        "supply_score": "(g * 29) % 100",
    })  # fmt: skip
    alerts = max(50, entities // 3)
    statuses = "(ARRAY['open','acknowledged','resolved','dismissed'])[1 + g % 4]"
    step("alerts", Alert, alerts, {
        "fingerprint": f"'low_health_score:student:' || {stu} || ':' || g", "type": "'low_health_score'",
        "severity": "(ARRAY['critical','warning','info'])[1 + g % 3]", "status": statuses,
        "entity_type": "'student'", "entity_id": stu, "message": "'Student ' || " + stu + " || ' health 42'",
        "details": "'{}'::jsonb", "occurrences": "1 + g % 9",
        "first_seen": "now() - make_interval(mins => g * 3)", "last_seen": "now() - make_interval(mins => g)",
    })  # fmt: skip
    step("insights", Insight, alerts // 2, {
        "entity_type": "'student'", "entity_id": stu, "alert_id": "g", "risk": "(g % 100) / 100.0",
        "level": "'high'", "explanation": "'bench'", "recommendations": "'[\"call\"]'::jsonb",
        "drivers": "'[]'::jsonb", "features": "'{}'::jsonb", "model": "'bench'", "scored_at": "now()",
    })  # fmt: skip
    with connection.cursor() as cur:
        cur.execute("ANALYZE")
    return counts


def measure(client, path: str, n: int, *, headers: dict | None = None) -> tuple[list[float], list[dict]]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(3):  # warm caches, template loaders, connection
        assert client.get(path, **(headers or {})).status_code == 200
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        resp = client.get(path, **(headers or {}))
        times.append((time.perf_counter() - t0) * 1000)
        assert resp.status_code == 200
    with CaptureQueriesContext(connection) as ctx:
        client.get(path, **(headers or {}))
    return times, ctx.captured_queries


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def run_pages(client, n: int) -> dict[str, tuple[list[float], list[dict]]]:
    hx = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "live"}
    return {
        name: measure(client, path, n, headers=hx if "htmx" in name else None) for name, path in PAGES.items()
    }


def report(label: str, results: dict[str, tuple[list[float], list[dict]]], *, slowest: int = 0) -> None:
    for name, (times, captured) in results.items():
        queries = len(captured)
        print(
            f"  {label:<9} {name:<18} p50 {pct(times, 50):6.1f} ms  p95 {pct(times, 95):6.1f} ms  "
            f"max {max(times):6.1f} ms  mean {statistics.mean(times):6.1f} ms  queries {queries}",
            flush=True,
        )
        for q in sorted(captured, key=lambda q: -float(q["time"]))[:slowest]:
            print(f"      {float(q['time']) * 1000:6.1f} ms  {q['sql'][:150]}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--database", default="iops_bench_page")
    parser.add_argument("--slowest", type=int, default=3, help="show the N slowest queries of each page")
    parser.add_argument("--keep", action="store_true", help="leave the database for inspection")
    parser.add_argument("--smoke", action="store_true", help="20,000 events, 500 entities, 20 requests")
    args = parser.parse_args()
    if args.smoke:
        args.events, args.entities, args.requests = 20_000, 500, 20

    setup_django(args.database)
    from django.contrib.auth import get_user_model
    from django.test import Client

    user = get_user_model().objects.create_user("bench", password="bench-pass-123", is_staff=True)  # noqa: S106
    client = Client()
    client.force_login(user)
    print(
        f"page bench: PostgreSQL database {args.database}, {args.requests} requests per page, {os.cpu_count()} CPUs"
    )

    print("baseline: the same pages on an empty database")
    empty = run_pages(client, args.requests)
    report("empty", empty)

    print(f"populating: {args.events:,} events, {args.entities:,} entities")
    t0 = time.perf_counter()
    populate(events=args.events, entities=args.entities)
    print(f"  populated in {time.perf_counter() - t0:.1f} s")
    full = run_pages(client, args.requests)
    report("loaded", full, slowest=args.slowest)

    p95 = pct(full["/ (24h)"][0], 95)
    constant = all(len(full[k][1]) == len(empty[k][1]) for k in PAGES)
    print(
        f"RESULT / (24h): p95 {p95:.1f} ms with {args.events:,} events and {args.entities:,} entities "
        f"(empty database: p95 {pct(empty['/ (24h)'][0], 95):.1f} ms); target < 150 ms; "
        f"queries {len(full['/ (24h)'][1])} loaded vs {len(empty['/ (24h)'][1])} empty ({'constant' if constant else 'NOT constant'})"
    )
    if not args.keep:
        drop_database(args.database)
    return 0 if constant else 1


if __name__ == "__main__":
    sys.exit(main())
