"""End-to-end latency: event POSTed → KPI update received on the dashboard WebSocket.

Starts the real one-process server (`manage.py serve`: daphne + worker thread, embedded defaults) on a
free port, logs in as staff, opens /ws/dashboard/ and POSTs events at a steady rate. Each WebSocket
update carries the running event count (data-kpi="events_in_range"), so every event's latency is the
time from its POST to the first update that includes it. Baseline in the same run: a conventional
dashboard polling GET /api/kpis once a second.

    .venv/bin/python bench/e2e.py --rate 500 --events 1000
    .venv/bin/python bench/e2e.py --rate 5000 --events 5000
    .venv/bin/python bench/e2e.py --smoke
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import charts  # noqa: E402

from tests import livesrv  # noqa: E402

COUNT_RE = re.compile(r'data-kpi="events_in_range"[^>]*>\s*(\d+)\s*<')


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return (
        ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] * 1000
        if ordered
        else float("nan")
    )


async def login(client: httpx.AsyncClient, server: livesrv.LiveServer) -> str:
    page = await client.get("/accounts/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    resp = await client.post(
        "/accounts/login/",
        data={
            "username": server.username,
            "password": server.password,
            "csrfmiddlewaretoken": token,
            "next": "/",
        },
    )
    assert resp.status_code in (200, 302), resp.status_code
    return "; ".join(f"{k}={v}" for k, v in client.cookies.items())


async def sender(client, server, *, rate: float, total: int, batch: int, sent_at: list[float]) -> None:
    interval = batch / rate
    start = time.perf_counter()
    n = 0
    while n < total:
        k = min(batch, total - n)
        events = [
            {
                "event_type": "ib_call_logged",
                "event_id": f"e2e-{uuid.uuid4().hex}",
                "student_id": f"stu_{(n + i) % 500}",
            }
            for i in range(k)
        ]
        now = time.perf_counter()
        sent_at.extend([now] * k)
        resp = await client.post(
            "/api/ingest", json={"events": events}, headers={"Authorization": f"Bearer {server.api_key}"}
        )
        if resp.status_code != 202:
            raise SystemExit(f"ingest answered {resp.status_code}: {resp.text[:200]}")
        n += k
        delay = start + (n / batch) * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)


async def ws_latencies(
    server, cookie: str, *, total: int, sent_at: list[float], timeout: float
) -> list[float]:
    ws_url = server.url.replace("http://", "ws://") + "/ws/dashboard/?range=1h"
    lat: list[float] = []
    async with websockets.connect(
        ws_url, additional_headers={"Cookie": cookie, "Origin": server.url}, max_size=None
    ) as ws:
        first = await asyncio.wait_for(ws.recv(), 10)
        base = int(COUNT_RE.search(first).group(1))
        seen = 0
        ready.set()
        deadline = time.perf_counter() + timeout
        while seen < total and time.perf_counter() < deadline:
            try:
                msg = await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.perf_counter()))
            except TimeoutError:
                break
            t = time.perf_counter()
            m = COUNT_RE.search(msg)
            if not m:
                continue
            visible = min(int(m.group(1)) - base, len(sent_at))
            lat.extend(t - sent_at[i] for i in range(seen, visible))
            seen = max(seen, visible)
    return lat


async def poll_latencies(
    client, *, total: int, sent_at: list[float], timeout: float, every: float = 1.0
) -> list[float]:
    base = (await client.get("/api/kpis?range=1h")).json()["events_in_range"]
    lat: list[float] = []
    seen = 0
    ready.set()
    deadline = time.perf_counter() + timeout
    while seen < total and time.perf_counter() < deadline:
        await asyncio.sleep(every)
        count = (await client.get("/api/kpis?range=1h")).json()["events_in_range"]
        t = time.perf_counter()
        visible = min(count - base, len(sent_at))
        lat.extend(t - sent_at[i] for i in range(seen, visible))
        seen = max(seen, visible)
    return lat


ready = asyncio.Event()


async def run_one(server, *, mode: str, rate: float, total: int, batch: int) -> list[float]:
    global ready
    ready = asyncio.Event()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        cookie = await login(client, server)
        sent_at: list[float] = []
        timeout = total / rate + 30
        if mode == "ws":
            listener = asyncio.create_task(
                ws_latencies(server, cookie, total=total, sent_at=sent_at, timeout=timeout)
            )
        else:
            listener = asyncio.create_task(
                poll_latencies(client, total=total, sent_at=sent_at, timeout=timeout)
            )
        await asyncio.wait_for(ready.wait(), 15)
        await sender(client, server, rate=rate, total=total, batch=batch, sent_at=sent_at)
        lat = await listener
    if len(lat) < total:
        print(f"  warning: only {len(lat)} of {total} events were seen before the timeout", file=sys.stderr)
    return lat


def report(name: str, lat: list[float]) -> None:
    print(
        f"{name:<28} n={len(lat):>6}  p50={pct(lat, 50):7.0f} ms  p95={pct(lat, 95):7.0f} ms  "
        f"p99={pct(lat, 99):7.0f} ms  mean={statistics.fmean(lat) * 1000 if lat else float('nan'):7.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument(
        "--batch", type=int, default=0, help="events per POST (default: rate/50, i.e. a POST every 20 ms)"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument(
        "--chart",
        default=str(charts.CHARTS / "e2e_latency.png"),
        help="latency distribution image (default bench/charts/e2e_latency.png; '' for none)",
    )
    args = parser.parse_args()
    if args.smoke:
        args.rate, args.events = 100, 100
    batch = args.batch or max(1, int(args.rate / 50))
    with tempfile.TemporaryDirectory() as tmp:
        server = livesrv.start(Path(tmp), extra_env={"DASHBOARD_PUSH_INTERVAL_MS": "500"})
        try:
            print(
                f"end-to-end: {args.events} events at {args.rate:g} events/s, {batch} per POST "
                f"(server: manage.py serve, embedded defaults)"
            )
            push = asyncio.run(run_one(server, mode="ws", rate=args.rate, total=args.events, batch=batch))
            report("WebSocket push (IOps)", push)
            poll: list[float] = []
            if not args.no_baseline:
                poll = asyncio.run(
                    run_one(server, mode="poll", rate=args.rate, total=args.events, batch=batch)
                )
                report("baseline: polling 1/s", poll)
                if push and poll:
                    print(f"p95 ratio baseline/push: {pct(poll, 95) / pct(push, 95):.2f}x")
            if args.chart and not args.smoke:
                series = {"IOps WebSocket push": [t * 1000 for t in push]}
                if poll:
                    series["baseline: polling /api/kpis 1/s"] = [t * 1000 for t in poll]
                image = charts.latency_chart(
                    Path(args.chart),
                    series,
                    title=f"POST → dashboard update: {args.events:,} events at {args.rate:,.0f}/s "
                    f"(load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs)",
                )
                print(f"chart: {image}")
        finally:
            livesrv.stop(server)


if __name__ == "__main__":
    main()
