"""Runs N concurrent producer streams at a target rate, over HTTP or straight into the stream."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from simulator.population import EventFactory, Population

# A counted run with no --rate spreads its simulated span as if sent at this rate (for --speed).
NOMINAL_RATE = 100.0
# Above ~1.2 events/s the live population stops growing (built in about a second, ~30 MB): faster
# runs give each student more than one event a day.
MAX_LIVE_STUDENTS = 100_000

logger = logging.getLogger(__name__)


@dataclass
class Summary:
    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    retried: int = 0
    failed: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds if self.seconds else 0.0

    def add(self, **counts: int) -> None:
        with self.lock:
            for k, v in counts.items():
                setattr(self, k, getattr(self, k) + v)


class DirectSender:
    """Publishes through the same validation and stream code as the HTTP endpoint."""

    def send(self, events: list[dict[str, Any]], summary: Summary) -> None:
        from django.utils import timezone

        from ingest.services import events_ingest
        from ingest.streams import StreamUnavailable

        for attempt in range(8):
            try:
                outcome = events_ingest(body={"events": events}, now=timezone.now())
            except StreamUnavailable:
                summary.add(retried=1)
                time.sleep(min(0.25 * 2**attempt, 5))
                continue
            summary.add(sent=len(events), accepted=len(outcome.accepted), rejected=outcome.rejected)
            return
        summary.add(sent=len(events), failed=len(events))

    def thread_done(self) -> None:
        """A producer thread ends: close the database connections it opened."""
        from django.db import connections

        connections.close_all()


class HttpSender:
    def __init__(self, target: str, api_key: str, *, single: bool = False, transport=None):
        import httpx

        self.client = httpx.Client(
            base_url=target, headers={"Authorization": f"Bearer {api_key}"}, timeout=30, transport=transport
        )
        self.single = single

    def _post(self, body: Any, n: int, summary: Summary) -> None:
        import httpx

        for attempt in range(8):
            try:
                resp = self.client.post("/api/ingest", json=body)
            except httpx.HTTPError as exc:
                summary.add(retried=1)
                time.sleep(min(0.25 * 2**attempt, 5))
                last = str(exc)
                continue
            if resp.status_code in (429, 503):
                summary.add(retried=1)
                time.sleep(float(resp.headers.get("Retry-After", "1")))
                last = f"HTTP {resp.status_code}"
                continue
            data = resp.json()
            if resp.status_code >= 500 or resp.status_code in (401, 413, 415):
                summary.add(sent=n, failed=n)
                summary.errors.append(f"HTTP {resp.status_code}: {data.get('error')}")
                return
            accepted = int(data.get("accepted", 0))
            summary.add(sent=n, accepted=accepted, rejected=n - accepted)
            return
        summary.add(sent=n, failed=n)
        summary.errors.append(f"gave up after retries: {last}")

    def send(self, events: list[dict[str, Any]], summary: Summary) -> None:
        if self.single:
            for e in events:
                self._post(e, 1, summary)
        else:
            self._post({"events": events}, len(events), summary)


class SimClock:
    """Maps a producer's position in the run to an event timestamp.

    Live (speed 1, no `days`): the wall clock. History (`speed` > 1 or `days`): the simulated span
    (`days`, else the run's real span × `speed`) ends when the run started, so every timestamp is in
    the past and never beyond what ingest accepts (at most 5 minutes ahead). Count runs place event
    i of n at i/n of the span: the same seed gives the same timestamps, whatever the machine's speed.
    """

    def __init__(self, *, start: datetime, real_span: float, speed: float = 1.0, days: float | None = None):
        self.start = start
        self.live = not days and speed <= 1.0
        self.span = timedelta(days=days) if days else timedelta(seconds=real_span * max(speed, 1.0))

    def at(self, progress: float) -> datetime:
        if self.live:
            return datetime.now(UTC)
        return self.start - self.span + self.span * min(max(progress, 0.0), 1.0)


def population_for_rate(rate: float) -> tuple[int, int]:
    """(students, tutors) whose ordinary activity is `rate` events a second: a live marketplace at that
    rate. A small population at a high rate would give each student a month's events in an hour —
    every rule would fire on everyone."""
    from simulator.population import STUDENT_EVENTS_PER_DAY, STUDENTS_PER_TUTOR

    students = min(MAX_LIVE_STUDENTS, max(300, round(rate * 86400 / STUDENT_EVENTS_PER_DAY)))
    return students, max(30, students // STUDENTS_PER_TUTOR)


@dataclass
class _Run:
    """One run's shared state: what each producer stream reads (pacing, bounds) and writes (summary)."""

    sender: Any
    pop: Population
    sim: SimClock
    seed: int
    scenario: str
    streams: int
    events_per_stream: int | None  # a counted run (no duration)
    duration: float | None
    per_stream_interval: float  # seconds between one stream's events; 0: as fast as possible
    batch_size: int
    stream_offset: int
    stop: threading.Event
    summary: Summary = field(default_factory=Summary)
    started: float = field(default_factory=time.monotonic)

    def flush(self, batch: list[dict[str, Any]]) -> None:
        try:
            self.sender.send(batch, self.summary)
        except Exception as exc:  # noqa: BLE001 - counted and reported, never lost silently
            logger.exception("simulator send failed")
            self.summary.add(sent=len(batch), failed=len(batch))
            self.summary.errors.append(f"{exc.__class__.__name__}: {exc}"[:300])

    def produce(self, index: int) -> None:
        try:
            self._produce(index)
        finally:
            getattr(
                self.sender, "thread_done", lambda: None
            )()  # optional: DirectSender closes its connection

    def _done(self, produced: int, elapsed: float) -> bool:
        if self.duration:
            return elapsed >= self.duration
        return produced >= (self.events_per_stream or 0)

    def _progress(self, produced: int, elapsed: float) -> float:
        """0 → 1 through the run: by position for a counted run, by elapsed time for a timed one."""
        if self.duration:
            return min(1.0, elapsed / self.duration)
        return produced / (self.events_per_stream or 1)

    def _wait_until(self, next_at: float, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Sleep until this stream's next event is due, sending what is batched first when the wait is
        long (a slow rate must not hold events back); the batch still to fill."""
        delay = next_at - time.monotonic()
        if delay > 0 and batch and delay > 0.2:
            self.flush(batch)
            batch = []
            delay = next_at - time.monotonic()
        if delay > 0:
            self.stop.wait(delay)
        return batch

    def _produce(self, index: int) -> None:
        factory = EventFactory(
            self.pop, seed=self.seed, scenario=self.scenario, stream=self.stream_offset + index
        )
        interval = self.per_stream_interval
        produced = 0
        batch: list[dict[str, Any]] = []
        next_at = self.started + (index / self.streams) * interval
        while not self.stop.is_set():
            elapsed = time.monotonic() - self.started
            if self._done(produced, elapsed):
                break
            if interval:
                batch = self._wait_until(next_at, batch)
                next_at += interval
            progress = self._progress(produced, elapsed)
            if interval:  # a spike adds events at its own rate, it does not displace others
                next_at += interval * (1 / factory.intensity(progress) - 1)
            batch.append(factory.next_event(self.sim.at(progress), progress))
            produced += 1
            if len(batch) >= self.batch_size:
                self.flush(batch)
                batch = []
        if batch:
            self.flush(batch)


def run(
    *,
    sender,
    seed: int = 42,
    streams: int = 50,
    events_per_stream: int | None = 10,
    rate: float | None = None,
    duration: float | None = None,
    scenario: str = "steady",
    speed: float = 1.0,
    days: float | None = None,
    batch_size: int = 50,
    population: Population | None = None,
    students: int = 300,
    tutors: int = 60,
    stream_offset: int = 0,
    stop: threading.Event | None = None,
    on_progress: Callable[[Summary], None] | None = None,
) -> Summary:
    """Each stream draws from the shared population; pacing is global so `rate` is the total rate.

    A run is bounded by `duration` (seconds) or else by `events_per_stream`; progress through it
    (0 → 1) drives the scenario: by elapsed time for a timed run, by position for a counted one.
    Stream i draws event ids from stream number `stream_offset + i`: runs that must not repeat each
    other's ids (the beat tick) give distinct offsets."""
    total = None if duration else streams * (events_per_stream or 0)
    if total == 0:
        raise ValueError("a run needs a duration or events per stream")
    real_span = duration or (total or 0) / (rate or NOMINAL_RATE)
    state = _Run(
        sender=sender,
        pop=population or Population.build(seed=seed, students=students, tutors=tutors),
        sim=SimClock(start=datetime.now(UTC), real_span=real_span, speed=speed, days=days),
        seed=seed,
        scenario=scenario,
        streams=streams,
        events_per_stream=events_per_stream,
        duration=duration,
        per_stream_interval=(streams / rate) if rate else 0.0,
        batch_size=batch_size,
        stream_offset=stream_offset,
        stop=stop or threading.Event(),
    )
    threads = [
        threading.Thread(target=state.produce, args=(i,), daemon=True, name=f"sim-{i}")
        for i in range(streams)
    ]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        for t in threads:
            t.join(timeout=1.0)
            state.summary.seconds = time.monotonic() - state.started
            if on_progress:
                on_progress(state.summary)
    state.summary.seconds = time.monotonic() - state.started
    return state.summary
