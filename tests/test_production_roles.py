"""Issue 9 proof: the production roles as real processes on loopback (daphne, two Celery workers and
beat) against PostgreSQL and Redis. 10,000 events through daphne are stored exactly once and both
workers take a share; then one worker is SIGKILLed while more are posted, and its pending entries are
claimed by the other (XAUTOCLAIM after STREAM_CLAIM_IDLE_MS): nothing lost, nothing counted twice.

Runs in the PostgreSQL pass only. Everything it starts is its own: a database created and dropped
here, a unique stream key and channel prefix, an empty Redis DB number for the Celery broker.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from contextlib import suppress
from pathlib import Path

import httpx
import pytest

from tests.livesrv import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS = "redis://127.0.0.1:6379"
BATCH = 500


def _free_redis_db():
    import redis

    for n in range(15, 0, -1):
        client = redis.Redis.from_url(f"{REDIS}/{n}")
        if client.dbsize() == 0 and client.set("iops-ops2-roles-claim", "1", nx=True, ex=600):
            return n, client
    pytest.skip("no empty Redis DB number for the Celery broker")


@pytest.fixture
def roles(tmp_path):
    import psycopg
    import redis

    dbname = f"iops_roles_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    db_n, broker = _free_redis_db()
    key = f"iops-roles:{uuid.uuid4().hex}"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "VIRTUAL_ENV")}
    env.update(
        {
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{dbname}",
            "REDIS_URL": f"{REDIS}/0",
            "IOPS_STREAM_KEY": key,
            "CHANNEL_LAYER_PREFIX": f"iops-roles-{uuid.uuid4().hex[:8]}",
            "CELERY_BROKER_URL": f"{REDIS}/{db_n}",
            "SECRET_KEY": secrets.token_urlsafe(64),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "IOPS_VAR_DIR": str(tmp_path),
            "STREAM_CLAIM_IDLE_MS": "2000",
            "WORKER_HEARTBEAT_SECONDS": "1",
            "WORKER_BATCH_SIZE": "200",
            "INGEST_RATE_LIMIT_PER_SEC": "1000000",
            "INGEST_RATE_LIMIT_BURST": "1000000",
            "SIMULATOR_ENABLED": "false",
            # The machine's Redis keeps nothing on disk; this test kills workers, not Redis (issue 21 opt-out).
            "REDIS_REQUIRE_AOF": "false",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
    )
    procs: dict[str, subprocess.Popen] = {}

    def start(name: str, *cmd: str) -> subprocess.Popen:
        log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        procs[name] = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        return procs[name]

    def logs() -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(tmp_path.glob("*.log")))

    try:
        manage = [sys.executable, "manage.py"]
        subprocess.run(
            [*manage, "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=120
        )
        api_key = subprocess.run(
            [*manage, "create_api_key", "roles"],
            cwd=ROOT,
            env=env,
            check=True,
            timeout=60,
            capture_output=True,
            text=True,
        ).stdout.strip()
        start("web", str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), "iops.asgi:application")
        for n in ("w1", "w2"):
            start(
                n,
                str(BIN / "celery"),
                "-A",
                "iops",
                "worker",
                "--pool",
                "solo",
                "-n",
                f"{n}@%h",
                "-l",
                "WARNING",
            )
        start(
            "beat", str(BIN / "celery"), "-A", "iops", "beat", "-l", "WARNING", "-s", str(tmp_path / "beat")
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:  # healthy = database, stream, channel layer and a fresh worker heartbeat
            with suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"roles did not become healthy\n{logs()}"
            time.sleep(0.3)
        yield {
            "url": url,
            "key": api_key,
            "key_name": key,
            "procs": procs,
            "dsn": env["DATABASE_URL"],
            "logs": logs,
        }
    finally:
        for proc in procs.values():
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        client = redis.Redis.from_url(f"{REDIS}/0")
        client.delete(key, f"{key}:dead")
        broker.flushdb()  # the empty DB this test claimed: only its own Celery keys
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def _post_batches(url: str, key: str, prefix: str, total: int, accepted: list[str], on_batch=None) -> None:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        for start in range(0, total, BATCH):
            events = [
                {"event_type": "ib_call_logged", "event_id": f"{prefix}-{i}", "student_id": f"stu_{i % 300}"}
                for i in range(start, min(start + BATCH, total))
            ]
            for _attempt in range(20):
                resp = http.post("/api/ingest", json={"events": events})
                if resp.status_code != 503:
                    break
                time.sleep(float(resp.headers.get("Retry-After", "1")))
            assert resp.status_code == 202, resp.text
            accepted.extend(resp.json()["event_ids"])
            if on_batch is not None:
                on_batch(start // BATCH)


def _query(dsn: str, sql: str):
    import psycopg

    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()


def _wait_processed(roles, expected: int, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while _query(roles["dsn"], "SELECT count(*) FROM ingest_event")[0][0] < expected:
        assert time.monotonic() < deadline, f"not processed in time\n{roles['logs']()}"
        time.sleep(0.5)


def _assert_exactly_once(roles, accepted: list[str]) -> None:
    dsn = roles["dsn"]
    stored = {row[0] for row in _query(dsn, "SELECT event_id FROM ingest_event")}
    assert len(accepted) == len(set(accepted))
    assert stored == set(accepted)  # every accepted id stored, nothing else (unique event_id: once)
    # Aggregates folded once per event: a redelivered batch would count twice here.
    assert _query(dsn, "SELECT coalesce(sum(received), 0) FROM metrics_globalminute")[0][0] == len(accepted)
    assert _query(dsn, "SELECT coalesce(sum(ib_calls), 0) FROM metrics_studenthourly")[0][0] == len(accepted)


def test_roles_share_the_load_and_survive_a_killed_worker(roles):
    accepted: list[str] = []
    _post_batches(roles["url"], roles["key"], "a", 10_000, accepted)
    assert len(accepted) == 10_000
    _wait_processed(roles, 10_000)
    _assert_exactly_once(roles, accepted)
    time.sleep(1.5)  # let the last heartbeats land (WORKER_HEARTBEAT_SECONDS=1)
    shares = dict(
        _query(roles["dsn"], "SELECT name, processed FROM ingest_workerheartbeat WHERE processed > 0")
    )
    assert len(shares) == 2, shares
    assert sum(shares.values()) >= 10_000 and min(shares.values()) > 0, shares

    # Phase 2: SIGKILL worker 1 in the middle of 5,000 more events, while it holds unacked entries.
    import redis

    stream = redis.Redis.from_url(f"{REDIS}/0")
    w1_marker = f"-{roles['procs']['w1'].pid}-".encode()
    killed = threading.Event()
    held: list[int] = []

    def kill_w1(batch: int) -> None:
        if batch < 2 or killed.is_set():
            return
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            summary = stream.xpending(roles["key_name"], "iops-workers")
            mine = sum(c["pending"] for c in summary["consumers"] if w1_marker in c["name"])
            if mine:
                os.killpg(roles["procs"]["w1"].pid, signal.SIGKILL)
                held.append(mine)
                killed.set()
                return
            time.sleep(0.01)

    more: list[str] = []
    _post_batches(roles["url"], roles["key"], "b", 5_000, more, on_batch=kill_w1)
    assert killed.is_set() and roles["procs"]["w1"].wait(timeout=10) == -signal.SIGKILL
    assert held[0] > 0  # entries delivered to w1 and never acked: w2 must claim them
    _wait_processed(roles, 15_000)
    time.sleep(3)  # past STREAM_CLAIM_IDLE_MS: a second delivery would land now if any were due
    _assert_exactly_once(roles, accepted + more)
    print(json.dumps({"shares": shares, "held_by_killed_worker": held[0]}))
