"""Sustained load through the production roles: daphne + 2 Celery workers on PostgreSQL + Redis.

Posts batches at a steady rate (default 2,000 events/s for 10 minutes) to daphne's /api/ingest and every
5 s samples the stream lag (entries not yet acked) and the workers' resident memory. Prints the max lag,
lag at the end, RSS at start and end, and the rate achieved. Baseline in the same run: the same load for
the first 30 s against one worker (how far one consumer falls behind).

    .venv/bin/python bench/sustained.py                        # 2,000 events/s for 600 s
    .venv/bin/python bench/sustained.py --rate 1000 --seconds 120
    .venv/bin/python bench/sustained.py --smoke                # 300 events/s for 15 s
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import aggregate  # noqa: E402
from scaling import DB, REDIS, worker_env  # noqa: E402

from tests.livesrv import free_port  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start(cmd: list[str], env: dict) -> subprocess.Popen:
    """A role in its own session; its stderr kept in a temporary file (read back if it fails to start)."""
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True
    )
    proc.err = err  # type: ignore[attr-defined]
    return proc


def stderr_tail(proc: subprocess.Popen, lines: int = 5) -> str:
    proc.err.seek(0)  # type: ignore[attr-defined]
    return "\n".join(proc.err.read().decode(errors="replace").splitlines()[-lines:])  # type: ignore[attr-defined]


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


async def load(url: str, key: str, *, rate: float, seconds: float, sample, batch: int = 100) -> int:
    sent = 0
    interval = batch / rate
    start_t = time.perf_counter()
    next_sample = start_t
    async with httpx.AsyncClient(
        base_url=url, timeout=30, headers={"Authorization": f"Bearer {key}"}
    ) as client:
        while time.perf_counter() - start_t < seconds:
            events = [
                {
                    "event_type": "ib_call_logged",
                    "event_id": f"s-{uuid.uuid4().hex}",
                    "student_id": f"stu_{(sent + i) % 5000}",
                    "reason": "other",
                }
                for i in range(batch)
            ]
            resp = await client.post("/api/ingest", json={"events": events})
            if resp.status_code == 202:
                sent += resp.json()["accepted"]
            if time.perf_counter() >= next_sample:
                sample()
                next_sample += 5
            delay = start_t + (sent / batch) * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
    return sent


def phase(workers: int, *, rate: float, seconds: float, api_key: str, port: int, env: dict) -> dict:
    from ingest.streams import RedisStream

    stream = RedisStream(REDIS, env["IOPS_STREAM_KEY"], env["IOPS_STREAM_GROUP"])
    stream._ensure_group()
    procs = [start([str(ROOT / ".venv/bin/daphne"), "-p", str(port), "iops.asgi:application"], env)]
    procs += [
        start(
            [
                str(ROOT / ".venv/bin/celery"),
                "-A",
                "iops",
                "worker",
                "--pool",
                "solo",
                "-n",
                f"sus{i}@%h",
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                "WARNING",
            ],
            env,
        )
        for i in range(workers)
    ]
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code in (200, 503):
                    break
            except httpx.HTTPError:
                if procs[0].poll() is not None:
                    raise SystemExit(f"daphne did not start:\n{stderr_tail(procs[0])}") from None
                time.sleep(0.2)
        time.sleep(2)  # workers join the group
        samples: list[tuple[float, int, list[float]]] = []
        t0 = time.monotonic()

        def sample():
            b = stream.backlog()
            samples.append(
                (time.monotonic() - t0, b["waiting"] + b["in_flight"], [rss_mb(p.pid) for p in procs[1:]])
            )

        sent = asyncio.run(load(url, api_key, rate=rate, seconds=seconds, sample=sample))
        elapsed = time.monotonic() - t0
        sample()
        return {"sent": sent, "rate": sent / elapsed, "samples": samples}
    finally:
        stop(procs)
        stream.client.delete(stream.key, stream.dead_key)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--baseline-seconds", type=float, default=30)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.rate, args.seconds, args.baseline_seconds = 300, 15, 8
    aggregate.setup_django(DB)
    from ingest.keys import api_key_create

    api_key = api_key_create(name="bench", rate_limit_per_sec=args.rate * 5).plaintext
    try:
        print(
            f"sustained load: {args.rate:g} events/s for {args.seconds:g} s, daphne + {args.workers} workers, "
            f"{datetime.now(UTC):%Y-%m-%d}"
        )
        base_env = worker_env(f"iops-bench:{uuid.uuid4().hex}")
        base = phase(
            1, rate=args.rate, seconds=args.baseline_seconds, api_key=api_key, port=free_port(), env=base_env
        )
        lags = [s[1] for s in base["samples"]]
        print(
            f"baseline 1 worker, {args.baseline_seconds:g} s: achieved {base['rate']:.0f} ev/s, "
            f"lag max {max(lags)} end {lags[-1]}"
        )
        aggregate.reset_tables()
        env = worker_env(f"iops-bench:{uuid.uuid4().hex}")
        run = phase(
            args.workers, rate=args.rate, seconds=args.seconds, api_key=api_key, port=free_port(), env=env
        )
        lags = [s[1] for s in run["samples"]]
        rss_start = sum(run["samples"][0][2])
        rss_end = sum(run["samples"][-1][2])
        print(
            f"{args.workers} workers, {args.seconds:g} s: achieved {run['rate']:.0f} ev/s, sent {run['sent']}, "
            f"lag max {max(lags)} end {lags[-1]}, workers RSS {rss_start:.0f} MB → {rss_end:.0f} MB"
        )
    finally:
        aggregate.drop_database(DB)


if __name__ == "__main__":
    main()
