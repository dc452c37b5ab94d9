"""Ingest throughput: POST /api/ingest on the real server, against the conventional Django way.

Starts N daphne processes (default 2) sharing one listening socket on loopback, with the redis stream
backend on a key of its own (trimmed while the run goes on), no embedded worker (only ingest is
measured) and a database of its own (a fresh PostgreSQL database, or SQLite with --sqlite). A
concurrent asyncio HTTP/1.1 client (keep-alive connections, raw sockets: the load generator must
not be the bottleneck on the same 2 cores) drives each endpoint for a bounded time and prints
events/s and p50/p99 latency for single events and 100- and 500-event batches:

  ingest    POST /api/ingest            the product: lean ASGI route, pydantic schemas, Redis XADD
  django    POST /bench/django-ingest   the same view code through Django's full request path
  baseline  POST /bench/baseline-ingest the conventional way: Django form per event, one ORM row each

    .venv/bin/python bench/ingest.py                    # 8 s per measurement, 2 server processes
    .venv/bin/python bench/ingest.py --duration 15 --procs 2
    .venv/bin/python bench/ingest.py --smoke            # seconds; CI
    .venv/bin/python bench/ingest.py --server uvicorn   # the same app under uvicorn (pip install -e '.[uvicorn]')

The baseline/django endpoints are served by the same processes (bench/baseline_settings.py adds
their URLs; the product URLconf does not have them).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
REDIS_URL = "redis://127.0.0.1:6379/0"
PG_ADMIN = "postgres://postgres@127.0.0.1:5432/postgres"


@dataclass
class Result:
    name: str
    batch: int
    requests: int = 0
    events: int = 0
    errors: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def pct(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


# --- bodies -------------------------------------------------------------------------------------

_counter = 0


def _event(n: int) -> str:
    if n % 2:
        return (
            f'{{"event_type":"ib_call_logged","event_id":"b{RUN}-{n}","student_id":"stu_{n % 5000}",'
            f'"timestamp":"2026-01-05T10:00:00Z","reason":"billing_question","duration_seconds":240,'
            f'"resolved":false,"priority":"high"}}'
        )
    return (
        f'{{"event_type":"session_completed","event_id":"b{RUN}-{n}","student_id":"stu_{n % 5000}",'
        f'"tutor_id":"tut_{n % 300}","session_id":"ses_{n}","timestamp":"2026-01-05T10:00:00Z",'
        f'"duration_minutes":60,"subject":"Mathematics","rating":5}}'
    )


RUN = uuid.uuid4().hex[:6]


def body(batch: int) -> bytes:
    global _counter
    start = _counter
    _counter += batch
    if batch == 1:
        return _event(start).encode()
    return ('{"events":[' + ",".join(_event(start + i) for i in range(batch)) + "]}").encode()


# --- the load generator -------------------------------------------------------------------------


async def _connection(
    port: int, path: str, key: str, batch: int, deadline: float, result: Result, record: bool
):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nConnection: keep-alive\r\nContent-Length: "
    ).encode()
    try:
        while time.perf_counter() < deadline:
            payload = body(batch)
            started = time.perf_counter()
            writer.write(head + str(len(payload)).encode() + b"\r\n\r\n" + payload)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            if not record:
                continue
            status = int(status_line.split()[1])
            result.latencies.append(time.perf_counter() - started)
            result.requests += 1
            if status == 202:
                result.events += batch
            else:
                result.errors[status] = result.errors.get(status, 0) + 1
    finally:
        writer.close()


async def _trim(stream_key: str, stop: asyncio.Event) -> None:
    """Nobody consumes the stream during the run: keep Redis memory flat."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        while not stop.is_set():
            await client.xtrim(stream_key, maxlen=20_000, approximate=True)
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                pass
        await client.delete(stream_key)
    finally:
        await client.aclose()


async def measure(port, key, stream_key, name, path, batch, concurrency, duration, warmup) -> Result:
    result = Result(name=name, batch=batch)
    stop = asyncio.Event()
    trimmer = asyncio.create_task(_trim(stream_key, stop))
    if warmup:
        end = time.perf_counter() + warmup
        await asyncio.gather(
            *(_connection(port, path, key, batch, end, result, False) for _ in range(concurrency))
        )
    started = time.perf_counter()
    deadline = started + duration
    await asyncio.gather(
        *(_connection(port, path, key, batch, deadline, result, True) for _ in range(concurrency))
    )
    result.seconds = time.perf_counter() - started
    stop.set()
    await trimmer
    return result


# --- the server ---------------------------------------------------------------------------------


def _manage(env: dict, *args: str) -> str:
    out = subprocess.run(
        [PYTHON, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    if out.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return out.stdout


def _pg_database(name: str, *, drop: bool = False) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop:
            conn.execute(f'CREATE DATABASE "{name}"')


def start_servers(env: dict, procs: int, server: str) -> tuple[list[subprocess.Popen], int, socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    sock.set_inheritable(True)
    port = sock.getsockname()[1]
    fd = sock.fileno()
    if server == "uvicorn":  # its own supervisor forks the workers onto one socket
        sock.close()
        cmd = [PYTHON, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port), "--workers", str(procs)]
        cmd += ["--no-access-log", "--log-level", "warning", "--lifespan", "off", "iops.asgi:application"]
        servers = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=sys.stderr)]
    else:
        cmd = [PYTHON, "-m", "daphne", "--fd", str(fd), "-v", "0", "iops.asgi:application"]
        servers = [
            subprocess.Popen(
                cmd, cwd=ROOT, env=env, pass_fds=(fd,), stdout=subprocess.DEVNULL, stderr=sys.stderr
            )
            for _ in range(procs)
        ]
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code in (200, 503):
                time.sleep(1.0 if procs > 1 else 0.2)  # let every process finish importing
                return servers, port, sock
        except httpx.HTTPError:
            pass
        if any(p.poll() is not None for p in servers):
            break
        time.sleep(0.3)
    for p in servers:
        p.kill()
    raise SystemExit("server did not start")


def stop_servers(servers: list[subprocess.Popen]) -> None:
    for p in servers:
        p.terminate()
    for p in servers:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=8.0, help="seconds measured per endpoint and size")
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--procs", type=int, default=2, help="server processes sharing the socket")
    parser.add_argument("--concurrency", type=int, default=32, help="connections for single events")
    parser.add_argument("--batch-concurrency", type=int, default=8, help="connections for batches")
    parser.add_argument("--server", choices=("daphne", "uvicorn"), default="daphne")
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of a fresh PostgreSQL database")
    parser.add_argument("--skip-django", action="store_true", help="leave out the full-Django-path row")
    parser.add_argument("--smoke", action="store_true", help="a few seconds in all: CI")
    args = parser.parse_args()
    if args.server == "uvicorn":
        try:
            import uvicorn  # noqa: F401
        except ImportError:
            raise SystemExit("--server uvicorn needs: .venv/bin/pip install -e '.[uvicorn]'") from None
    if args.smoke:
        args.duration, args.warmup, args.procs, args.concurrency, args.sqlite = 0.7, 0.2, 1, 8, True
        args.batch_concurrency = 2

    tmp = Path(tempfile.mkdtemp(prefix="iops-bench-ingest-"))
    stream_key = f"iops-bench:{uuid.uuid4().hex}"
    pg_name = f"iops_bench_{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "IOPS_STREAM")}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "bench.baseline_settings",
            "IOPS_VAR_DIR": str(tmp),
            "REDIS_URL": REDIS_URL,
            "IOPS_STREAM": "redis",
            "IOPS_STREAM_KEY": stream_key,
            "CHANNEL_LAYER_PREFIX": f"bench-{uuid.uuid4().hex[:6]}",
            "IOPS_EMBEDDED_WORKER": "false",
            "INGEST_RATE_LIMIT_PER_SEC": "100000000",
            "INGEST_RATE_LIMIT_BURST": "100000000",
            "LOG_LEVEL": "WARNING",
            # Django under ASGI runs each sync request in a fresh thread: persistent connections would
            # pile up (one per request thread) and exhaust PostgreSQL's max_connections.
            "DB_CONN_MAX_AGE": "0",
            "SECRET_KEY": "bench-" + uuid.uuid4().hex,
            "PYTHONPATH": str(ROOT),
        }
    )
    if not args.sqlite:
        _pg_database(pg_name)
        env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{pg_name}"
    servers: list[subprocess.Popen] = []
    try:
        _manage(env, "migrate", "--noinput", "-v", "0")
        key = _manage(env, "create_api_key", "bench").strip().splitlines()[-1].strip()
        servers, port, sock = start_servers(env, args.procs, args.server)
        print(
            f"server: {args.procs} × {args.server} on 127.0.0.1:{port}, redis stream, "
            f"{'SQLite' if args.sqlite else 'PostgreSQL'}; {args.duration:g} s per row; "
            f"{args.concurrency} connections for single events, {args.batch_concurrency} for batches",
            flush=True,
        )
        endpoints = [("ingest", "/api/ingest")]
        if not args.skip_django:
            endpoints.append(("django", "/bench/django-ingest"))
        endpoints.append(("baseline", "/bench/baseline-ingest"))
        results: dict[tuple[str, int], Result] = {}
        print(
            f"{'endpoint':<9} {'batch':>5} {'req/s':>9} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8}  errors"
        )
        for batch in (1, 100, 500):
            conc = args.concurrency if batch == 1 else args.batch_concurrency
            for name, path in endpoints:
                r = asyncio.run(
                    measure(port, key, stream_key, name, path, batch, conc, args.duration, args.warmup)
                )
                results[(name, batch)] = r
                print(
                    f"{name:<9} {batch:>5} {r.requests_per_s:>9.0f} {r.events_per_s:>10.0f} "
                    f"{r.pct(50):>8.1f} {r.pct(99):>8.1f}  {r.errors or '-'}",
                    flush=True,
                )
        print("\nratios (events/s) against the conventional baseline:")
        for batch in (1, 100, 500):
            base = results[("baseline", batch)].events_per_s
            line = (
                f"  batch {batch:>3}: ingest {results[('ingest', batch)].events_per_s / base:5.1f}×"
                if base
                else ""
            )
            if base and ("django", batch) in results:
                line += f", django path {results[('django', batch)].events_per_s / base:5.1f}×"
            print(line or f"  batch {batch:>3}: baseline accepted nothing")
        bad = {k: r.errors for k, r in results.items() if r.errors}
        if bad:
            print(f"\nnon-202 answers: {bad}")
        if statistics.fmean(r.requests for r in results.values()) == 0:
            raise SystemExit("no request completed")
    finally:
        stop_servers(servers)
        if not args.sqlite:
            _pg_database(pg_name, drop=True)
        import redis

        redis.Redis.from_url(REDIS_URL).delete(stream_key)


if __name__ == "__main__":
    main()
