"""`simulate --target` against the real one-process server over a socket: batches and single events
are accepted and processed, and the server's 429s are waited out (Retry-After), never dropped."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from django.core.management import call_command

from tests import livesrv


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # A small per-key rate limit so a fast run meets real 429s.
    srv = livesrv.start(
        tmp_path_factory.mktemp("live-sim"),
        extra_env={"INGEST_RATE_LIMIT_PER_SEC": "100", "INGEST_RATE_LIMIT_BURST": "60"},
    )
    yield srv
    livesrv.stop(srv)


def _simulate(server, capsys, *extra: str) -> str:
    call_command(
        "simulate",
        "--target",
        server.url,
        "--api-key",
        server.api_key,
        "--students",
        "30",
        "--tutors",
        "6",
        *extra,
    )
    return capsys.readouterr().out


def _events(server) -> int:
    headers = {"Authorization": f"Bearer {server.api_key}"}
    return httpx.get(f"{server.url}/api/kpis?range=1h", headers=headers, timeout=10).json()["events_in_range"]


def _processed(server, minimum: int) -> int:
    deadline = time.monotonic() + 20  # the embedded worker processes in the background
    while (total := _events(server)) < minimum and time.monotonic() < deadline:
        time.sleep(0.2)
    return total


def test_batches_beyond_the_rate_limit_are_retried_until_accepted(server, capsys):
    before = _events(server)
    out = _simulate(server, capsys, "--streams", "4", "--events-per-stream", "100", "--seed", "1")
    assert "sent=400 accepted=400 rejected=0" in out and "failed=0" in out
    retried = int(out.split("retried=")[1].split()[0])
    assert retried > 0  # 400 events at full speed against 100/s: the server said 429 and we waited
    assert _processed(server, before + 400) == before + 400


def test_single_event_requests(server, capsys):
    before = _events(server)
    out = _simulate(server, capsys, "--streams", "2", "--events-per-stream", "15", "--single", "--seed", "2")
    assert "sent=30 accepted=30 rejected=0" in out and "failed=0" in out
    assert _processed(server, before + 30) == before + 30


def _stored(server) -> tuple[int, set[tuple[str, str]]]:
    """Stored events, and the (student, subject) pairs of the sessions among them."""
    out = livesrv.manage(
        server,
        "shell",
        "-c",
        "import json; from ingest.models import Event; "
        "rows = Event.objects.filter(event_type='session_started').values_list('student_id', 'payload'); "
        "print(json.dumps([Event.objects.count(), sorted({(s, p['subject']) for s, p in rows})]))",
    )
    count, pairs = json.loads(out.strip().splitlines()[-1])
    return count, {tuple(p) for p in pairs}


def _wait_for_events(server, more_than: int, timeout: float = 30) -> tuple[int, set[tuple[str, str]]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        count, pairs = _stored(server)
        if count > more_than:
            return count, pairs
        time.sleep(0.5)
    raise AssertionError(f"no simulated events beyond {more_than} within {timeout}s")


@pytest.mark.embedded
def test_serve_simulates_the_same_population_across_restarts_with_new_event_ids(tmp_path, settings):
    """`make run`'s simulator: a restart keeps feeding the same students (SIMULATOR_SEED: the same
    subjects per student), so their history builds up, and its events are new (none dropped as
    repeats of the previous run's ids)."""
    from simulator.population import Population
    from simulator.runner import population_for_rate

    students, tutors = population_for_rate(40)
    allowed = {
        (s.id, subject)
        for s in Population.build(seed=settings.SIMULATOR_SEED, students=students, tutors=tutors).students
        for subject in s.subjects
    }
    srv = livesrv.start(tmp_path, simulate=40)
    try:
        first, sessions_first = _wait_for_events(srv, 40)
        livesrv.restart(srv)
        second, sessions_second = _wait_for_events(srv, first + 40)
    finally:
        livesrv.stop(srv)
    assert len(sessions_first) > 3 and len(sessions_second - sessions_first) > 3
    assert sessions_second <= allowed
    assert second > first + 40
