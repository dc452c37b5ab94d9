"""Fault injection (issue 10): Redis killed mid-ingest, a PostgreSQL connection dropped mid-batch,
the embedded worker SIGKILLed mid-batch and restarted, malformed and poison messages in the stream.

Each fault is injected for real (a redis-server of the test's own, SIGKILLed and restarted on the
same port and append-only file; pg_terminate_backend on the worker's own connection) and the test
checks the guarantees: 503 + Retry-After while down, nothing answered 202 lost, nothing counted twice,
and recovery without anyone's help. Bounded waits only.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from contextlib import suppress
from pathlib import Path

import httpx
import pytest

from conftest import event
from tests import livesrv


def _redis_server(port: int, data_dir) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--dir", str(data_dir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    import redis

    client = redis.Redis(port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + 10
    while True:
        with suppress(redis.ConnectionError):
            if client.ping():
                return proc
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.05)


def _kill(proc: subprocess.Popen) -> None:
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


@pytest.mark.redis
def test_redis_killed_mid_ingest_loses_nothing_answered_202(tmp_path):
    port = livesrv.free_port()
    data = tmp_path / "redis"
    data.mkdir()
    redis_proc = _redis_server(port, data)
    server = None
    try:
        server = livesrv.start(
            tmp_path,
            extra_env={
                "REDIS_URL": f"redis://127.0.0.1:{port}/0",
                "IOPS_EMBEDDED_WORKER": "true",  # `serve` runs the stream consumer against this Redis
                "CELERY_TASK_ALWAYS_EAGER": "true",
                "STREAM_CLAIM_IDLE_MS": "1000",
                "WORKER_BLOCK_MS": "100",
            },
        )
        accepted: set[str] = set()
        posted: set[str] = set()
        outcomes: list[tuple[str, int, str | None]] = []  # (phase, status, Retry-After)
        phase = "up"
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {server.api_key}"}, timeout=10
        ) as http:

            def post_batch() -> None:
                events = [event("ib_call_logged", student_id=f"s{i % 7}") for i in range(50)]
                posted.update(e["event_id"] for e in events)
                resp = http.post("/api/ingest", json={"events": events})
                outcomes.append((phase, resp.status_code, resp.headers.get("Retry-After")))
                if resp.status_code == 202:
                    accepted.update(resp.json()["event_ids"])

            for _ in range(10):
                post_batch()
            _kill(redis_proc)  # a crash, not a clean shutdown: only the append-only file survives
            phase = "down"
            for _ in range(5):
                post_batch()
            health = http.get("/healthz")
            assert health.status_code == 503 and health.json()["checks"]["stream"].startswith("error")
            redis_proc = _redis_server(port, data)
            phase = "restarted"
            deadline = time.monotonic() + 30
            while sum(1 for p, s, _ in outcomes if p == "restarted" and s == 202) < 10:
                assert time.monotonic() < deadline, outcomes[-5:]
                post_batch()
            down = [(s, ra) for p, s, ra in outcomes if p == "down"]
            assert down and all(s == 503 and ra and int(ra) > 0 for s, ra in down), down
            assert all(s == 202 for p, s, _ in outcomes if p == "up")

            # The embedded worker reconnects by itself and drains everything.
            db = tmp_path / "iops.sqlite3"
            deadline = time.monotonic() + 60
            while True:
                with sqlite3.connect(db, timeout=10) as conn:
                    stored = {r[0] for r in conn.execute("SELECT event_id FROM ingest_event")}
                    folded = conn.execute("SELECT coalesce(sum(received), 0) FROM metrics_globalminute")
                    folded = folded.fetchone()[0]
                if accepted <= stored:
                    break
                assert time.monotonic() < deadline, f"lost: {len(accepted - stored)}"
                time.sleep(0.3)
            assert stored <= posted  # a 503 whose events did reach Redis may be stored too; never others
            assert folded == len(stored)  # each stored event folded exactly once
            assert http.get("/healthz").status_code == 200
    finally:
        if server is not None:
            livesrv.stop(server)
        _kill(redis_proc)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_postgres_connection_dropped_mid_batch_is_retried_not_lost_or_doubled(settings, post):
    import psycopg
    from django.db import connection
    from django.db.models import Sum

    from ingest.models import Event, WorkerHeartbeat
    from ingest.worker import StreamWorker
    from metrics.models import GlobalMinute, StudentHourly

    if connection.vendor != "postgresql":
        pytest.skip("pg_terminate_backend needs PostgreSQL")
    settings.STREAM_CLAIM_IDLE_MS = 300  # the claimed batch comes back quickly after the failure
    settings.WORKER_HEARTBEAT_SECONDS = 0
    n = 40
    assert (
        post({"events": [event("ib_call_logged", student_id=f"s{i % 5}") for i in range(n)]}).status_code
        == 202
    )
    db = connection.settings_dict
    admin_dsn = f"host={db['HOST']} port={db['PORT'] or 5432} user={db['USER']} dbname={db['NAME']}"
    fired = threading.Event()

    def drop_connection(execute, sql, params, many, context):
        # Inside the batch's transaction, after the events were inserted: the fold into the buckets.
        if not fired.is_set() and "metrics_globalminute" in sql:
            fired.set()
            pid = context["connection"].connection.info.backend_pid
            with psycopg.connect(admin_dsn, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        return execute(sql, params, many, context)

    stop = threading.Event()
    worker = StreamWorker(block_ms=50)

    def run() -> None:
        from django.db import connection as thread_connection

        try:
            with thread_connection.execute_wrapper(drop_connection):
                worker.run(stop)
        finally:
            thread_connection.close()  # or the test database cannot be dropped

    thread = threading.Thread(target=run, name=f"fault-{uuid.uuid4().hex[:6]}")
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while Event.objects.count() < n and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert fired.is_set(), "the fault was never injected"
    assert not thread.is_alive()
    assert Event.objects.count() == n
    assert GlobalMinute.objects.aggregate(s=Sum("received"))["s"] == n
    assert StudentHourly.objects.aggregate(s=Sum("ib_calls"))["s"] == n
    assert WorkerHeartbeat.objects.get().processed == n


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_batch_that_loses_a_deadlock_is_run_again_at_once(settings, post, monkeypatch):
    """Another transaction takes a student's snapshot row and then waits for the batch's bucket row
    while the batch waits for the snapshot row: PostgreSQL rolls the batch back as the deadlock's
    victim. The worker runs it again at once (not after STREAM_CLAIM_IDLE_MS): every event is
    processed once, within seconds."""
    import psycopg
    from django.db import connection
    from django.db.models import Sum

    import ingest.worker
    from ingest.models import Event
    from ingest.worker import StreamWorker
    from metrics.models import StudentHourly

    if connection.vendor != "postgresql":
        pytest.skip("a deadlock needs PostgreSQL")
    attempts = []
    real = ingest.worker.process_batch

    def counted(events, *, now):
        attempts.append(len(events))
        return real(events, now=now)

    settings.STREAM_CLAIM_IDLE_MS = 600_000  # a redelivery would come far too late for this test
    at = "2026-03-20T11:30:00+00:00"
    assert post({"events": [event("ib_call_logged", student_id="s_dl", timestamp=at)]}).status_code == 202
    StreamWorker(block_ms=0).run_once()  # the student's bucket and snapshot rows exist
    n = 5
    assert (
        post(
            {"events": [event("ib_call_logged", student_id="s_dl", timestamp=at) for _ in range(n)]}
        ).status_code
        == 202
    )
    db = connection.settings_dict
    dsn = f"host={db['HOST']} port={db['PORT'] or 5432} user={db['USER']} dbname={db['NAME']}"
    blocked, fired = threading.Event(), threading.Event()

    def other() -> None:
        with psycopg.connect(dsn) as conn:  # one transaction, rolled back on leaving
            conn.execute("SET deadlock_timeout = '30s'")  # the batch (1 s) detects the deadlock first
            conn.execute("SELECT 1 FROM metrics_studentsnapshot WHERE student_id = 's_dl' FOR UPDATE")
            blocked.set()
            conn.execute("SELECT 1 FROM metrics_studenthourly WHERE student_id = 's_dl' FOR UPDATE")
            conn.rollback()

    def interleave(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if not fired.is_set() and sql.startswith('INSERT INTO "metrics_studenthourly"'):
            fired.set()  # the batch holds the bucket row: the other transaction takes the snapshot row
            threading.Thread(target=other, daemon=True).start()
            assert blocked.wait(5)
            time.sleep(0.3)  # and is waiting for the bucket row
        return result

    monkeypatch.setattr(ingest.worker, "process_batch", counted)
    worker = StreamWorker(block_ms=0)
    started = time.monotonic()
    with connection.execute_wrapper(interleave):
        worker.run_once()
    assert fired.is_set()
    assert attempts == [n, n]  # rolled back once, then run again whole
    assert time.monotonic() - started < 20
    assert Event.objects.count() == n + 1 and worker.processed == n
    assert StudentHourly.objects.aggregate(s=Sum("ib_calls"))["s"] == n + 1


def _sqlite_counts(db) -> dict[str, int]:
    with sqlite3.connect(db, timeout=10) as conn:
        one = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
        return {
            "stored": one("SELECT count(*) FROM ingest_event"),
            "pending": one("SELECT count(*) FROM ingest_pendingevent"),
            "claimed": one("SELECT count(*) FROM ingest_pendingevent WHERE claimed_by != ''"),
        }


def _accept_backlog(server: livesrv.LiveServer, n: int) -> list[str]:
    """Restart the live server as `serve --no-worker`, post n IB calls `k-0`… in batches of 500 (each
    must get 202), then SIGKILL it: the events wait in the database stream. Returns the accepted ids."""
    batches = [
        [
            event("ib_call_logged", event_id=f"k-{i}", student_id=f"s{i % 97}")
            for i in range(start, min(n, start + 500))
        ]
        for start in range(0, n, 500)
    ]
    livesrv.stop(server)
    web = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", server.url.rsplit(":", 1)[1], "--simulate", "0",
         "--no-worker"],
        cwd=livesrv.ROOT, env=server.env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    server.proc = web
    accepted: list[str] = []
    try:
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {server.api_key}"}, timeout=30
        ) as http:
            deadline = time.monotonic() + 30
            while True:
                with suppress(httpx.HTTPError):
                    if http.get("/healthz").status_code == 200:
                        break
                assert time.monotonic() < deadline, "serve --no-worker did not start"
                time.sleep(0.1)
            for events in batches:
                resp = http.post("/api/ingest", json={"events": events})
                assert resp.status_code == 202, resp.text
                accepted.extend(resp.json()["event_ids"])
    finally:
        _kill(web)
    return accepted


@pytest.mark.embedded
def test_worker_sigkilled_mid_batch_then_restarted_processes_everything_once(tmp_path):
    """Embedded mode (SQLite, database stream): kill -9 `serve` while a batch is claimed and not acked,
    start it again, and every accepted event is stored and folded exactly once."""
    n = 10_000
    server = livesrv.start(
        tmp_path,
        extra_env={
            "STREAM_CLAIM_IDLE_MS": "1000",  # the dead worker's claim expires quickly
            "WORKER_HEARTBEAT_SECONDS": "0",
            "WORKER_BATCH_SIZE": "500",  # several batches before the kill (and their heartbeats)
            "INGEST_RATE_LIMIT_PER_SEC": "1000000",
            "INGEST_RATE_LIMIT_BURST": "1000000",
        },
    )
    db = tmp_path / "iops.sqlite3"
    worker = None
    try:
        # 1. A backlog accepted while no worker runs (`serve --no-worker`).
        accepted = _accept_backlog(server, n)
        assert _sqlite_counts(db) == {"stored": 0, "pending": n, "claimed": 0}

        # 2. The worker starts on the backlog and is SIGKILLed with a batch claimed but not acked.
        # A kill that lands in the short gap between an ack and the next claim did not hit a batch:
        # then a fresh worker is started and the fault injected again (at most 5 tries).
        for _attempt in range(5):
            before = _sqlite_counts(db)["stored"]
            worker = subprocess.Popen(
                [sys.executable, "manage.py", "serve", "--port", str(livesrv.free_port()), "--simulate", "0"],
                cwd=livesrv.ROOT, env=server.env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
            deadline = time.monotonic() + 60
            while True:
                counts = _sqlite_counts(db)
                if counts["claimed"] and counts["stored"] >= before + 1000:  # mid-run, a batch in flight
                    _kill(worker)
                    break
                assert counts["stored"] < n, "the worker finished before it could be killed"
                assert time.monotonic() < deadline and worker.poll() is None, counts
                time.sleep(0.005)
            at_kill = _sqlite_counts(db)
            if at_kill["claimed"]:
                break
        assert at_kill["claimed"] > 0 and at_kill["stored"] < n, at_kill
        print(f"killed with {at_kill['claimed']} claimed, {at_kill['stored']} of {n} stored")

        # 3. Restart: the expired claim is taken again; nothing lost, nothing counted twice.
        livesrv.restart(server)
        deadline = time.monotonic() + 90
        while (counts := _sqlite_counts(db))["stored"] < n or counts["pending"]:
            assert time.monotonic() < deadline, counts
            time.sleep(0.2)
        with sqlite3.connect(db, timeout=10) as conn:
            stored = {r[0] for r in conn.execute("SELECT event_id FROM ingest_event")}
            received = conn.execute("SELECT sum(received) FROM metrics_globalminute").fetchone()[0]
            ib_calls = conn.execute("SELECT sum(ib_calls) FROM metrics_studenthourly").fetchone()[0]
            dead = conn.execute("SELECT count(*) FROM ingest_streamdeadletter").fetchone()[0]
            beats = dict(conn.execute("SELECT name, processed FROM ingest_workerheartbeat"))
        assert stored == set(accepted) and len(accepted) == n
        assert received == ib_calls == n  # a batch folded twice would show here
        assert dead == 0
        busy = [v for v in beats.values() if v > 0]
        assert len(busy) >= 2, beats  # the killed worker(s) and the restarted one all did work
        with httpx.Client(base_url=server.url, timeout=10) as http:
            assert http.get("/healthz").status_code == 200
    finally:
        if worker is not None:
            _kill(worker)
        livesrv.stop(server)


# `manage.py serve` (or, with the argument `drain`, one worker run) whose worker dies outright (SIGKILL, as the kernel's OOM killer or a crash in
# native code would) whenever a batch it is about to process holds the event KILLER_EVENT_ID.
_KILLER_SERVE = """
import os, signal, sys
sys.path.insert(0, os.getcwd())
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iops.settings")
import django
django.setup()
import ingest.worker
real = ingest.worker.process_batch
def process_batch(events, *, now):
    if any(e["event_id"] == os.environ["KILLER_EVENT_ID"] for e in events):
        os.kill(os.getpid(), signal.SIGKILL)
    return real(events, now=now)
ingest.worker.process_batch = process_batch
if sys.argv[1:] == ["drain"]:  # one worker run until the stream is empty
    ingest.worker.drain(max_seconds=60)
else:
    from django.core.management import execute_from_command_line
    execute_from_command_line(["manage.py", *sys.argv[1:]])
"""


@pytest.mark.embedded
def test_an_event_that_kills_every_worker_is_dead_lettered_and_the_rest_processed_once(tmp_path):
    """Embedded mode (SQLite, database stream): one accepted event kills any worker process that
    processes it. Workers are restarted as a supervisor would: after a few deaths it is dead-lettered
    unprocessed, every other accepted event is stored and folded exactly once, and nothing is left
    pending or recorded as suspect."""
    n, killer = 2_000, "k-1234"
    server = livesrv.start(
        tmp_path,
        extra_env={
            "STREAM_CLAIM_IDLE_MS": "1000",  # a dead worker's claim expires quickly
            "WORKER_BATCH_SIZE": "200",
            "INGEST_RATE_LIMIT_PER_SEC": "1000000",
            "INGEST_RATE_LIMIT_BURST": "1000000",
        },
    )
    db = tmp_path / "iops.sqlite3"
    worker = None
    deaths = 0
    try:
        accepted = _accept_backlog(server, n)
        assert len(accepted) == n and killer in accepted
        env = {**server.env, "KILLER_EVENT_ID": killer}
        deadline = time.monotonic() + 150
        while True:
            worker = subprocess.Popen(
                [sys.executable, "-c", _KILLER_SERVE, "serve", "--port", str(livesrv.free_port()), "--simulate", "0"],
                cwd=livesrv.ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
            while worker.poll() is None and _sqlite_counts(db)["pending"]:
                assert time.monotonic() < deadline, (deaths, _sqlite_counts(db))
                time.sleep(0.05)
            if worker.poll() is None:  # the stream is drained and this worker is alive
                break
            assert worker.returncode == -signal.SIGKILL, worker.returncode
            deaths += 1
            assert deaths <= 6, "the killer event was never set aside"
        print(f"worker deaths before the killer event was dead-lettered: {deaths}")
        _kill(worker)
        # The batch it came in, then pieces of 1/16 of the dead slice until it is alone: 200 → 13 → 1.
        assert 2 <= deaths <= 4
        assert _assert_killer_set_aside(db, accepted, killer, "database") == deaths + 1
        assert _sqlite_counts(db)["pending"] == 0
    finally:
        if worker is not None and worker.poll() is None:
            _kill(worker)


def _stream_events(n: int) -> list[dict]:
    """n normalised IB calls `r-0`… as the ingest endpoint would publish them."""
    at = "2026-11-30T12:00:00+00:00"
    return [
        {
            "event_id": f"r-{i}",
            "event_type": "ib_call_logged",
            "timestamp": at,
            "received_at": at,
            "payload": {
                "student_id": f"s{i % 31}",
                "call_id": f"c{i}",
                "reason": "other",
                "duration_seconds": 60,
                "resolved": True,
                "priority": "low",
            },
        }  # fmt: skip
        for i in range(n)
    ]


def _killer_env(tmp_path, killer: str, **extra: str) -> dict:
    """The environment of worker runs on a SQLite file of their own (migrated here) whose worker dies
    on `killer`."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "IOPS_STREAM")}
    env.update(
        {
            "IOPS_TESTING": "1",
            "IOPS_VAR_DIR": str(tmp_path),
            "WORKER_BATCH_SIZE": "100",
            "KILLER_EVENT_ID": killer,
        }
    )
    env.update(extra)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"],
        cwd=livesrv.ROOT,
        env=env,
        check=True,
        timeout=120,
    )
    return env


def _drain_with_restarts(env: dict, db: Path, n: int, *, pause: float = 0) -> int:
    """Run worker processes (`drain`), restarting them as a supervisor would, until all n events are
    stored or dead-lettered; `pause` between runs that settled nothing (a dead worker's lease has not
    expired yet). Returns how many of them died."""
    deaths = 0
    for _run in range(20):
        run = subprocess.run(
            [sys.executable, "-c", _KILLER_SERVE, "drain"],
            cwd=livesrv.ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if run.returncode:
            assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
            deaths += 1
            assert deaths <= 6, "the killer event was never set aside"
            continue
        with sqlite3.connect(db, timeout=10) as conn:
            settled = conn.execute(
                "SELECT (SELECT count(*) FROM ingest_event) + (SELECT count(*) FROM ingest_streamdeadletter)"
            ).fetchone()[0]
        if settled == n:
            print(f"worker deaths before the killer event was dead-lettered: {deaths}")
            return deaths
        time.sleep(pause)
    raise AssertionError(f"not drained after 20 worker runs ({deaths} died)")


def _assert_killer_set_aside(db: Path, accepted: list[str], killer: str, backend: str) -> int:
    """Every accepted event but the killer stored and folded once (IB calls), the killer the one dead
    letter, no suspect rows left. Returns the killer's delivery count."""
    with sqlite3.connect(db, timeout=10) as conn:
        stored = sorted(r[0] for r in conn.execute("SELECT event_id FROM ingest_event"))
        received = conn.execute("SELECT sum(received) FROM metrics_globalminute").fetchone()[0]
        ib_calls = conn.execute("SELECT sum(ib_calls) FROM metrics_studenthourly").fetchone()[0]
        dead = conn.execute("SELECT body, error, backend, deliveries FROM ingest_streamdeadletter").fetchall()
        suspects = conn.execute("SELECT count(*) FROM ingest_suspectdelivery").fetchone()[0]
    assert stored == sorted(set(accepted) - {killer})
    assert received == ib_calls == len(accepted) - 1  # nothing folded twice
    assert len(dead) == 1 and json.loads(dead[0][0])["event_id"] == killer and dead[0][2] == backend
    assert "died" in dead[0][1]
    assert suspects == 0
    return dead[0][3]


@pytest.mark.redis
def test_an_event_that_kills_every_worker_is_dead_lettered_on_the_redis_stream(tmp_path, redis_url):
    """The production stream: events written to a Redis stream of the test's own, one of which kills
    the worker process. Worker runs are restarted until the stream is drained: the killer is a dead
    letter (in the database and on the stream's dead-letter key), every other event stored once, and
    nothing is left pending in the consumer group."""
    import redis

    from ingest.streams import RedisStream

    n, killer = 600, "r-345"
    key = f"iops-test:killer:{uuid.uuid4().hex}"
    env = _killer_env(
        tmp_path,
        killer,
        REDIS_URL=redis_url,
        IOPS_STREAM="redis",
        IOPS_STREAM_KEY=key,
        STREAM_CLAIM_IDLE_MS="200",
    )
    client = redis.Redis.from_url(redis_url)
    try:
        events = _stream_events(n)
        RedisStream(redis_url, key, "iops-workers").publish(events)
        deaths = _drain_with_restarts(env, tmp_path / "iops.sqlite3", n, pause=0.2)
        # The batch it came in (100), then 1/16 pieces of the dead slice until it is alone: 7 → 1.
        assert 2 <= deaths <= 4, deaths
        _assert_killer_set_aside(tmp_path / "iops.sqlite3", [e["event_id"] for e in events], killer, "redis")
        assert client.xpending(key, "iops-workers")["pending"] == 0
        assert client.xlen(key) == 0 and client.xlen(f"{key}:dead") == 1
    finally:
        client.delete(key, f"{key}:dead")


@pytest.mark.embedded
def test_an_event_that_kills_every_worker_is_dead_lettered_on_kinesis(tmp_path, moto_endpoint):
    """The same on a Kinesis stream (moto in server mode, one shard): the dead worker's shard lease
    expires (1 s), the next worker reads again from the checkpoint, and the killer is set aside; the
    checkpoint ends past every record."""
    import boto3

    from ingest.kinesis import KinesisStream

    n, killer = 600, "r-345"
    name = f"iops-test-killer-{uuid.uuid4().hex[:8]}"
    aws = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}
    client = boto3.client(
        "kinesis", endpoint_url=moto_endpoint, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip
    client.create_stream(StreamName=name, ShardCount=1)
    env = _killer_env(
        tmp_path, killer, IOPS_STREAM="kinesis", KINESIS_STREAM_NAME=name, AWS_ENDPOINT_URL=moto_endpoint,
        AWS_REGION="us-east-1", KINESIS_LEASE_SECONDS="1", **aws,
    )  # fmt: skip
    try:
        events = _stream_events(n)
        KinesisStream(name, client=client).publish(events)
        deaths = _drain_with_restarts(env, tmp_path / "iops.sqlite3", n, pause=1.1)
        # As on the other backends, plus at most one: a batch read on from the previous one (not from
        # the checkpoint) carries no stored delivery count, so its first redelivery counts as fresh.
        assert 2 <= deaths <= 5, deaths
        _assert_killer_set_aside(
            tmp_path / "iops.sqlite3", [e["event_id"] for e in events], killer, "kinesis"
        )
    finally:
        client.delete_stream(StreamName=name, EnforceConsumerDeletion=True)


def _poison(event_id: str) -> dict:
    """A stream message that decodes but fails in the pipeline (its timestamp is not a date)."""
    return {
        "event_id": event_id,
        "event_type": "ib_call_logged",
        "timestamp": "yesterday-ish",
        "received_at": "2026-01-01T00:00:00+00:00",
        "payload": {"student_id": "p"},
    }


@pytest.mark.django_db
def test_malformed_and_poison_messages_are_dead_lettered_without_blocking(settings, post):
    """Messages written straight into the database stream: undecodable ones are dead letters at once,
    an event that fails processing is retried alone and dead-lettered after STREAM_MAX_DELIVERIES,
    and the good events around them are processed on the first pass."""
    from django.db.models import Sum

    from ingest.models import Event, PendingEvent, StreamDeadLetter
    from ingest.worker import StreamWorker
    from metrics.models import GlobalMinute

    settings.STREAM_MAX_DELIVERIES = 2
    settings.STREAM_CLAIM_IDLE_MS = 0  # a failed delivery may be claimed again at once (no waiting)
    assert (
        post({"events": [event("ib_call_logged", student_id=f"a{i}") for i in range(3)]}).status_code == 202
    )
    PendingEvent.objects.create(body="not an event")
    PendingEvent.objects.create(body={"event_id": "half"})  # envelope keys missing
    PendingEvent.objects.create(body=_poison("poison-1"))
    assert (
        post({"events": [event("ib_call_logged", student_id=f"b{i}") for i in range(3)]}).status_code == 202
    )

    worker = StreamWorker(block_ms=0, batch_size=50)
    assert worker.run_once() == 9  # one pass over everything: nothing waits behind the bad three
    assert Event.objects.count() == 6 and worker.processed == 6
    malformed = StreamDeadLetter.objects.filter(error__startswith="malformed")
    assert malformed.count() == 2
    assert not StreamDeadLetter.objects.filter(body__event_id="poison-1").exists()  # not yet: 1 delivery
    assert list(PendingEvent.objects.values_list("body__event_id", "deliveries")) == [("poison-1", 1)]

    assert worker.run_once() == 1  # second delivery of the poison event: the last one allowed
    poison = StreamDeadLetter.objects.get(body__event_id="poison-1")
    assert poison.deliveries == 2 and poison.error.startswith("ValueError")
    assert not PendingEvent.objects.exists()
    assert worker.run_once() == 0
    assert Event.objects.count() == 6
    assert GlobalMinute.objects.aggregate(s=Sum("received"))["s"] == 6


def test_a_poison_event_in_a_large_batch_is_isolated_by_halving(settings, post, monkeypatch):
    """One bad event among 64: the failed batch is split in halves until the bad one stands alone —
    a dozen attempts, not 64 single-event transactions; the 63 good events are processed once, in the
    first pass, and the bad one is left for redelivery (then dead-lettered at the limit)."""
    import ingest.worker
    from ingest.models import Event, PendingEvent, StreamDeadLetter
    from ingest.worker import StreamWorker

    settings.STREAM_MAX_DELIVERIES = 1
    assert (
        post({"events": [event("ib_call_logged", student_id=f"h{i}") for i in range(40)]}).status_code == 202
    )
    PendingEvent.objects.create(body=_poison("poison-h"))
    assert (
        post({"events": [event("ib_call_logged", student_id=f"k{i}") for i in range(23)]}).status_code == 202
    )
    calls = []
    real = ingest.worker.process_batch

    def counted(events, *, now):
        calls.append(len(events))
        return real(events, now=now)

    monkeypatch.setattr(ingest.worker, "process_batch", counted)
    worker = StreamWorker(block_ms=0, batch_size=64)
    assert worker.run_once() == 64
    assert Event.objects.count() == 63 and worker.processed == 63
    assert calls[0] == 64 and len(calls) <= 2 * 6 + 1, calls  # 2 halves per level, log2(64) levels
    assert StreamDeadLetter.objects.get().body["event_id"] == "poison-h"  # its one delivery was the limit
    assert not PendingEvent.objects.exists()


@pytest.mark.postgres
@pytest.mark.redis
def test_production_roles_ride_out_a_redis_crash(tmp_path):
    """daphne + a Celery worker on PostgreSQL and a Redis of the test's own (stream, channel layer and
    Celery broker): Redis is SIGKILLed mid-ingest and restarted; the roles carry on without a restart."""
    import secrets

    import psycopg

    pg_admin = "postgresql://postgres@127.0.0.1:5432/postgres"
    dbname = f"iops_faults_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    dsn = f"postgres://postgres@127.0.0.1:5432/{dbname}"
    rport, wport = livesrv.free_port(), livesrv.free_port()
    data = tmp_path / "redis"
    data.mkdir()
    redis_proc = _redis_server(rport, data)
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "VIRTUAL_ENV")}
    env.update(
        {
            "DATABASE_URL": dsn,
            "REDIS_URL": f"redis://127.0.0.1:{rport}/0",
            "CELERY_BROKER_URL": f"redis://127.0.0.1:{rport}/1",
            "SECRET_KEY": secrets.token_urlsafe(64),
            "ALLOWED_HOSTS": "127.0.0.1",
            "IOPS_VAR_DIR": str(tmp_path),
            "STREAM_CLAIM_IDLE_MS": "2000",
            "WORKER_HEARTBEAT_SECONDS": "1",
            "WORKER_HEARTBEAT_MAX_AGE_SECONDS": "10",
            "INGEST_RATE_LIMIT_PER_SEC": "1000000",
            "INGEST_RATE_LIMIT_BURST": "1000000",
            "LOG_LEVEL": "WARNING",
        }
    )
    bindir = Path(sys.executable).parent
    procs: dict[str, subprocess.Popen] = {}

    def counts() -> tuple[set[str], int]:
        with psycopg.connect(dsn) as conn:
            stored = {r[0] for r in conn.execute("SELECT event_id FROM ingest_event")}
            folded = conn.execute("SELECT coalesce(sum(received), 0) FROM metrics_globalminute").fetchone()[0]
        return stored, folded

    try:
        manage = [sys.executable, "manage.py"]
        subprocess.run([*manage, "migrate", "-v", "0"], cwd=livesrv.ROOT, env=env, check=True, timeout=120)
        key = subprocess.run(
            [*manage, "create_api_key", "faults"],
            cwd=livesrv.ROOT, env=env, check=True, timeout=60, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        for name, cmd in {
            "web": [str(bindir / "daphne"), "-b", "127.0.0.1", "-p", str(wport), "iops.asgi:application"],
            "worker": [str(bindir / "celery"), "-A", "iops", "worker", "--pool", "solo", "-l", "WARNING"],
        }.items():
            log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
            procs[name] = subprocess.Popen(
                cmd, cwd=livesrv.ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        url = f"http://127.0.0.1:{wport}"

        def healthz() -> httpx.Response | None:
            with suppress(httpx.HTTPError):
                return httpx.get(f"{url}/healthz", timeout=10)
            return None

        def wait_healthy(what: str) -> None:
            deadline = time.monotonic() + 60
            while (r := healthz()) is None or r.status_code != 200:
                assert time.monotonic() < deadline, f"{what}: {r and r.text}"
                time.sleep(0.3)

        wait_healthy("roles did not start")
        accepted: set[str] = set()
        posted: set[str] = set()
        outcomes: list[tuple[str, int, str | None]] = []
        phase = "up"
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:

            def post_batch() -> None:
                events = [event("ib_call_logged", student_id=f"s{i % 11}") for i in range(200)]
                posted.update(e["event_id"] for e in events)
                resp = http.post("/api/ingest", json={"events": events})
                outcomes.append((phase, resp.status_code, resp.headers.get("Retry-After")))
                if resp.status_code == 202:
                    accepted.update(resp.json()["event_ids"])

            for _ in range(10):
                post_batch()
            _kill(redis_proc)
            phase = "down"
            for _ in range(5):
                post_batch()
            down = healthz()
            assert down is not None and down.status_code == 503
            assert down.json()["checks"]["stream"].startswith("error")
            redis_proc = _redis_server(rport, data)
            back_at = time.monotonic()
            phase = "restarted"
            deadline = time.monotonic() + 30
            while sum(1 for p, s, _ in outcomes if p == "restarted" and s == 202) < 10:
                assert time.monotonic() < deadline, outcomes[-5:]
                post_batch()
        assert all(s == 202 for p, s, _ in outcomes if p == "up")
        assert all(s == 503 and ra and int(ra) > 0 for p, s, ra in outcomes if p == "down"), outcomes
        deadline = time.monotonic() + 90
        while not accepted <= (stored := counts()[0]):
            assert time.monotonic() < deadline, f"lost: {len(accepted - stored)}"
            time.sleep(0.5)
        stored, folded = counts()
        assert stored <= posted and folded == len(stored)  # nothing unknown, each folded once
        drained_at = time.monotonic()
        assert procs["worker"].poll() is None and procs["web"].poll() is None  # nobody restarted them
        wait_healthy("not healthy again after Redis came back")  # incl. a fresh worker heartbeat
        print(
            f"accepted {len(accepted)}, refused while down {sum(1 for p, *_ in outcomes if p == 'down')} "
            f"batches; all accepted stored {drained_at - back_at:.1f} s and healthy "
            f"{time.monotonic() - back_at:.1f} s after Redis came back"
        )
    finally:
        for proc in procs.values():
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                _kill(proc)
        _kill(redis_proc)
        with psycopg.connect(pg_admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
