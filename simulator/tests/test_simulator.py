"""The simulator: reproducible, rate-accurate, never drops silently, and feeds the real pipeline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.management import call_command

from ingest.models import Event, PendingEvent
from ingest.worker import drain
from simulator import runner
from simulator.population import EventFactory, Population

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _draw(seed: int, n: int = 300, scenario: str = "steady") -> list[dict]:
    factory = EventFactory(Population.build(seed=seed), seed=seed, scenario=scenario, stream=3)
    return [factory.next_event(NOW, i / n) for i in range(n)]


def test_same_seed_gives_the_same_events():
    assert _draw(7) == _draw(7)
    assert _draw(7) != _draw(8)


def test_population_is_persistent_so_entities_accumulate_history():
    events = _draw(7, n=2000)
    students = [e["payload"]["student_id"] for e in events if "student_id" in e["payload"]]
    assert len(set(students)) < len(students) / 3  # the same students come back


def test_churn_wave_cohort_gets_worse_over_the_run():
    pop = Population.build(seed=5)
    factory = EventFactory(pop, seed=5, scenario="churn_wave")
    cohort = factory.cohort

    def cohort_health(progress: float) -> float:
        scores = []
        for _ in range(3000):
            e = factory.next_event(NOW, progress)
            if e["event_type"] == "customer_health_update" and e["payload"]["student_id"] in cohort:
                scores.append(e["payload"]["health_score"])
        return sum(scores) / len(scores)

    assert cohort_health(0.0) - cohort_health(1.0) > 20


class Collect:
    def __init__(self):
        self.events: list[dict] = []

    def send(self, events, summary):
        self.events.extend(events)
        summary.add(sent=len(events), accepted=len(events))


def test_rate_is_held_within_ten_percent():
    sink = Collect()
    summary = runner.run(
        sender=sink, streams=4, events_per_stream=None, rate=200, duration=3.0, batch_size=10
    )
    achieved = len(sink.events) / summary.seconds
    assert 180 <= achieved <= 220, achieved
    assert summary.accepted == len(sink.events)


@pytest.mark.django_db(transaction=True)
def test_simulate_command_publishes_the_seed_run_and_reports(capsys):
    call_command("simulate", "--streams", "5", "--events-per-stream", "10", "--seed", "3")
    out = capsys.readouterr().out
    assert "sent=50 accepted=50 rejected=0" in out
    assert PendingEvent.objects.count() == 50


@pytest.mark.django_db(transaction=True)
def test_simulated_history_is_in_the_past_and_processed(settings):
    # an hour of simulated time squeezed into ~1 s: timestamps spread back from now, none in the future
    summary = runner.run(
        sender=runner.DirectSender(),
        streams=2,
        events_per_stream=None,
        rate=100,
        duration=1.0,
        speed=3600,
        batch_size=20,
    )
    assert summary.accepted > 50 and summary.failed == 0
    drain()
    times = sorted(Event.objects.values_list("occurred_at", flat=True))
    assert (times[-1] - times[0]).total_seconds() > 1800
    assert times[-1] <= datetime.now(UTC)


@pytest.mark.django_db(transaction=True)
def test_beat_tick_runs_only_when_enabled(settings):
    from simulator.tasks import simulate_tick

    settings.SIMULATOR_ENABLED = False
    assert simulate_tick() == 0 and PendingEvent.objects.count() == 0
    settings.SIMULATOR_ENABLED = True
    settings.SIMULATOR_TICK_EVENTS = 30
    with time_machine.travel(NOW, tick=False):
        assert simulate_tick() == 30 and PendingEvent.objects.count() == 30
    # the next minute's tick: the same population, new event ids (not dropped as repeats)
    with time_machine.travel(NOW + timedelta(minutes=1), tick=False):
        assert simulate_tick() == 30
        drain()
    assert Event.objects.count() == 60
    students = set(Event.objects.exclude(student_id="").values_list("student_id", flat=True))
    # the tick's population is sized to its rate (30 a minute): about one event per student a day
    size, tutors = runner.population_for_rate(30 / 60)
    assert (size, tutors) == (43_200, 4_320)
    assert students <= {s.id for s in Population.build(seed=settings.SIMULATOR_SEED, students=size).students}


@pytest.mark.django_db(transaction=True)
def test_rate_is_held_within_ten_percent_through_the_database_stream():
    summary = runner.run(
        sender=runner.DirectSender(), streams=4, events_per_stream=None, rate=200, duration=3.0, batch_size=10
    )
    published = PendingEvent.objects.count()
    assert summary.accepted == published and summary.failed == 0
    assert 180 <= published / summary.seconds <= 220, published / summary.seconds


@pytest.mark.parametrize(("speed", "days"), [(1.0, None), (3600.0, None), (1.0, 30.0)])
def test_the_clock_never_runs_ahead_of_now(speed, days):
    sink = Collect()
    runner.run(sender=sink, streams=3, events_per_stream=40, speed=speed, days=days, batch_size=7)
    latest = max(datetime.fromisoformat(e["timestamp"]) for e in sink.events)
    assert latest <= datetime.now(UTC)
    if days:
        earliest = min(datetime.fromisoformat(e["timestamp"]) for e in sink.events)
        assert timedelta(days=29) < latest - earliest <= timedelta(days=30)


def test_a_counted_history_run_is_reproducible_whatever_the_pacing():
    def timeline(seed: int) -> list[tuple]:
        sink = Collect()
        with time_machine.travel(NOW, tick=False):
            runner.run(sender=sink, seed=seed, streams=2, events_per_stream=50, days=7, batch_size=9)
        return sorted((e["event_id"], e["timestamp"], e["event_type"]) for e in sink.events)

    assert timeline(4) == timeline(4) != timeline(5)


def test_http_sender_backs_off_on_429_and_503_and_never_drops_silently(monkeypatch):
    import httpx

    monkeypatch.setattr(runner.time, "sleep", lambda s: None)  # Retry-After honoured, not waited in the test
    answers = iter([(429, {"Retry-After": "1"}), (503, {"Retry-After": "2"}), (202, {})])

    def handler(request: httpx.Request) -> httpx.Response:
        status, headers = next(answers)
        body = {"accepted": 2, "rejected": 0} if status == 202 else {"error": "busy", "errors": []}
        return httpx.Response(status, json=body, headers=headers)

    sender = runner.HttpSender("http://iops.test", "k", transport=httpx.MockTransport(handler))
    summary = runner.Summary()
    sender.send([{"event_type": "x"}, {"event_type": "y"}], summary)
    assert (summary.sent, summary.accepted, summary.retried, summary.failed) == (2, 2, 2, 0)

    failing = runner.HttpSender(
        "http://iops.test",
        "k",
        transport=httpx.MockTransport(lambda r: httpx.Response(503, json={"error": "down"})),
    )
    summary = runner.Summary()
    failing.send([{"event_type": "x"}], summary)
    assert summary.failed == 1 and summary.errors  # counted and reported, not lost silently


def test_a_sender_that_raises_is_counted_as_failed_not_lost():
    class Broken:
        def send(self, events, summary):
            raise RuntimeError("stream exploded")

    summary = runner.run(sender=Broken(), streams=2, events_per_stream=5, batch_size=5)
    assert (summary.sent, summary.failed, summary.accepted) == (10, 10, 0)
    assert "RuntimeError: stream exploded" in summary.errors[0]


def test_http_sender_batches_by_default_and_sends_single_events_on_request():
    import httpx

    bodies: list = []

    def handler(request: httpx.Request) -> httpx.Response:
        import json

        body = json.loads(request.content)
        bodies.append(body)
        n = len(body["events"]) if "events" in body else 1
        assert request.headers["Authorization"] == "Bearer k"
        return httpx.Response(202, json={"accepted": n, "rejected": 0})

    events = [{"event_type": "x", "n": i} for i in range(3)]
    summary = runner.Summary()
    runner.HttpSender("http://iops.test", "k", transport=httpx.MockTransport(handler)).send(events, summary)
    assert bodies == [{"events": events}] and summary.accepted == 3
    bodies.clear()
    single = runner.HttpSender("http://iops.test", "k", single=True, transport=httpx.MockTransport(handler))
    single.send(events, summary)
    assert bodies == events and summary.accepted == 6
