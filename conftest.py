"""Shared fixtures: personas (staff, outsider), an API key, posting and draining helpers."""

from __future__ import annotations

import json
import os
import uuid
from datetime import timedelta

os.environ.setdefault("IOPS_TESTING", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_state(settings):
    from alerts import thresholds
    from ingest.ratelimit import buckets, shared_buckets
    from ingest.streams import get_stream

    thresholds.invalidate()  # each test starts from its own database's thresholds
    buckets.reset()
    get_stream.cache_clear()
    shared_buckets.cache_clear()
    yield
    get_stream.cache_clear()
    shared_buckets.cache_clear()


@pytest.fixture(scope="session")
def moto_endpoint() -> str:
    """A moto server in this process: a real HTTP hop to fake AWS (Kinesis, SNS, EventBridge, SQS),
    reachable by subprocesses too."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def api_key(db) -> str:
    """A key with every scope (ingest, read, act): the tests of each surface use it."""
    from ingest.keys import api_key_create
    from ingest.models import API_KEY_SCOPES

    return api_key_create(name="test", scopes=API_KEY_SCOPES).plaintext


@pytest.fixture
def staff_user(db, django_user_model):
    return django_user_model.objects.create_user("ops", "ops@example.com", "ops-pass-123", is_staff=True)


@pytest.fixture
def outsider(db, django_user_model):
    return django_user_model.objects.create_user("outsider", "o@example.com", "outsider-pass-123")


@pytest.fixture
def post(client, api_key):
    """POST a JSON body to /api/ingest with the test key; returns the response."""

    def _post(
        body, *, key: str | None = None, content_type: str = "application/json", raw: bytes | None = None
    ):
        headers = {"HTTP_AUTHORIZATION": f"Bearer {key or api_key}"}
        data = raw if raw is not None else json.dumps(body)
        return client.post("/api/ingest", data=data, content_type=content_type, **headers)

    return _post


@pytest.fixture
def drain(db):
    """Process everything waiting in the configured stream, as the worker would."""
    from ingest.worker import drain as _drain

    return lambda: _drain(max_seconds=30)


@pytest.fixture
def redis_url() -> str:
    import redis

    url = "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.ConnectionError:
        pytest.fail("Redis must run on 127.0.0.1:6379 (.ci/run starts it)")
    return url


@pytest.fixture
def redis_stream_settings(settings, redis_url):
    """Switch the app to the redis stream backend on a key of its own, removed afterwards."""
    import redis

    from ingest.streams import get_stream

    key = f"iops-test:{uuid.uuid4().hex}"
    settings.IOPS_STREAM = "redis"
    settings.REDIS_URL = redis_url
    settings.IOPS_STREAM_KEY = key
    get_stream.cache_clear()
    yield key
    get_stream.cache_clear()
    client = redis.Redis.from_url(redis_url)
    client.delete(key, f"{key}:dead")


def event(event_type: str, **fields):
    """A flat event body with a fresh event_id (override with event_id=...)."""
    body = {"event_type": event_type, "event_id": fields.pop("event_id", f"t_{uuid.uuid4().hex[:20]}")}
    body.update(fields)
    return body


def race(*jobs, timeout: float = 60) -> None:
    """Run the callables at the same moment, each on its own thread with its own database
    connections (released after), and re-raise the first error any of them hit."""
    import threading

    from django.db import connections

    barrier = threading.Barrier(len(jobs))
    errors: list[BaseException] = []

    def run(job) -> None:
        try:
            barrier.wait(timeout=10)
            job()
        except BaseException as exc:  # noqa: BLE001 - re-raised below, in the test's thread
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    if errors:
        raise errors[0]


# Platform readings that put a watched student (see `watched_student`) at a known health score: the
# reading's drop below the usual 85 and its level are the only evidence (metrics/health.py).
READING_WARNING = 54  # health 59: at risk, low_health_score warning
READING_WARNING_LOWER = 52  # health 53.8: still a warning
READING_CRITICAL = 40  # health 40: critical


def watched_student(post, drain, student: str = "stu_1", *, baseline: float = 85.0, days: int = 20) -> None:
    """A student IOps has watched for `days` days (a completed session then, a platform reading of
    `baseline` five days later): enough history to be scored, with nothing against them yet."""
    from django.utils import timezone

    now = timezone.now()
    events = [
        event(
            "session_completed",
            session_id=f"hist_{student}",
            student_id=student,
            tutor_id="tut_hist",
            timestamp=(now - timedelta(days=days)).isoformat(),
        ),
        event(
            "customer_health_update",
            student_id=student,
            health_score=baseline,
            timestamp=(now - timedelta(days=days - 5)).isoformat(),
        ),
    ]
    assert post({"events": events}).status_code == 202
    drain()


def platform_reading(post, drain, score: float, student: str = "stu_1", *, watch: bool = True) -> None:
    """A platform health reading now, through the public API, processed as the worker would; with
    `watch`, the student gets their history first (once)."""
    from metrics.models import StudentSnapshot

    if (
        watch
        and not StudentSnapshot.objects.filter(student_id=student, observed_since__isnull=False).exists()
    ):
        watched_student(post, drain, student)
    assert post(event("customer_health_update", student_id=student, health_score=score)).status_code == 202
    drain()
