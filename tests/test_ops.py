"""Operations (issue 9): worker heartbeats, /healthz worker and stream checks, /metrics, request ids."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import time_machine
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from conftest import event
from ingest.models import WorkerHeartbeat
from ingest.worker import StreamWorker
from iops.lib.request_id import RequestIdFilter

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _ops_settings(settings):
    from ingest import counters

    settings.METRICS_FLUSH_SECONDS = 0  # every request folds its tally at once
    settings.METRICS_TOKEN = "metrics-token-for-tests-0123456789"
    counters.reset_local()
    yield
    counters.reset_local()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket is


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(fams: dict, family: str, name: str | None = None, **labels) -> float:
    for s in fams[family].samples:
        if s.name == (name or family) and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise AssertionError(f"no sample {name or family} {labels} in {fams[family].samples}")


# --- heartbeats -----------------------------------------------------------------------------------


def test_worker_heartbeat_counts_processed_events(post, drain):
    resp = post({"events": [event("ib_call_logged", student_id=f"s{i}") for i in range(7)]})
    assert resp.status_code == 202
    drain()
    beat = WorkerHeartbeat.objects.get()
    assert beat.processed == 7
    assert beat.backend == "database"
    assert beat.batches >= 1
    assert sum(1 for _ in beat.batch_buckets) > 0 and max(beat.batch_buckets.values()) == beat.batches
    assert (timezone.now() - beat.last_seen).total_seconds() < 5


def test_heartbeat_is_throttled_and_progress_logged_per_interval(settings, post, caplog):
    settings.WORKER_HEARTBEAT_SECONDS = 3600
    settings.WORKER_LOG_SECONDS = 3600
    worker = StreamWorker(block_ms=0, batch_size=2)
    caplog.set_level(logging.INFO, logger="ingest.worker")
    post({"events": [event("ib_call_logged", student_id=f"s{i}") for i in range(6)]})
    for _ in range(3):
        worker.run_once()
    # The first batch wrote the row; the next two were within the interval: no further writes.
    assert WorkerHeartbeat.objects.get().processed == 2
    assert not [r for r in caplog.records if "worker progress" in r.getMessage()]
    settings.WORKER_LOG_SECONDS = 0.000001
    post(event("ib_call_logged", student_id="late"))
    worker.run_once()
    lines = [r for r in caplog.records if "worker progress" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].events == 7 and lines[0].rate > 0


# --- /healthz -------------------------------------------------------------------------------------


def test_healthz_worker_check_follows_the_heartbeat_age(client, settings, post, drain):
    settings.WORKER_EXPECTED = True
    settings.WORKER_HEARTBEAT_MAX_AGE_SECONDS = 60
    resp = client.get("/healthz")
    assert resp.status_code == 503
    assert resp.json()["checks"]["worker"].startswith("error: no worker heartbeat")
    post(event("ib_call_logged", student_id="s1"))
    drain()
    resp = client.get("/healthz")
    assert resp.status_code == 200, resp.json()
    assert resp.json() == {
        "status": "ok",
        "checks": {"database": "ok", "stream": "ok", "channel_layer": "ok", "worker": "ok"},
    }
    with time_machine.travel(timezone.now() + timedelta(seconds=61), tick=False):
        resp = client.get("/healthz")
    assert resp.status_code == 503
    assert resp.json()["status"] == "unavailable"
    assert resp.json()["checks"]["worker"].startswith("error: last heartbeat")


def test_healthz_runs_only_the_checks_asked_for(client, settings):
    """A load balancer probes what a web node needs: a stale worker fails the full check, not the
    web subset; the worker check can be asked for on its own even where it is not expected."""
    settings.WORKER_EXPECTED = True
    assert client.get("/healthz").status_code == 503  # no worker heartbeat yet
    resp = client.get("/healthz?checks=database,stream,channel_layer")
    assert resp.status_code == 200
    assert resp.json() == {
        "status": "ok",
        "checks": {"database": "ok", "stream": "ok", "channel_layer": "ok"},
    }
    settings.WORKER_EXPECTED = False
    resp = client.get("/healthz?checks=worker")
    assert resp.status_code == 503 and list(resp.json()["checks"]) == ["worker"]
    for bad in ("/healthz?checks=disk", "/healthz?checks=", "/healthz?checks=database,,nope"):
        resp = client.get(bad)
        assert resp.status_code == 400, bad
        assert resp.json()["errors"][0]["field"] == "checks"


def test_healthz_worker_not_expected_does_not_fail(client, settings):
    settings.WORKER_EXPECTED = False
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert "worker" not in resp.json()["checks"]


def test_healthz_names_a_stopped_redis(client, settings):
    from ingest.streams import get_stream

    settings.IOPS_STREAM = "redis"
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0"
    settings.WORKER_EXPECTED = False
    get_stream.cache_clear()
    resp = client.get("/healthz")
    assert resp.status_code == 503
    body = resp.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["stream"].startswith("error: ")
    assert body["checks"]["database"] == "ok"


@pytest.mark.timeout(60)  # the failure this guards against is a hang
def test_healthz_gives_up_on_a_silent_channel_layer_peer(client, settings):
    # A peer that completes the TCP handshake (listen backlog) and never answers: a blackholed Redis.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        settings.HEALTHZ_TIMEOUT_SECONDS = 0.5
        settings.WORKER_EXPECTED = False
        settings.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [f"redis://127.0.0.1:{port}/0"]},
            }
        }
        resp = client.get("/healthz")
    assert resp.status_code == 503
    assert resp.json()["checks"] == {
        "database": "ok",
        "stream": "ok",
        "channel_layer": "error: TimeoutError",
    }


# --- /metrics -------------------------------------------------------------------------------------


def test_metrics_refuses_anonymous_and_wrong_tokens(client, outsider):
    for headers in ({}, {"HTTP_AUTHORIZATION": "Bearer wrong"}, {"HTTP_AUTHORIZATION": "Basic x"}):
        resp = client.get("/metrics", **headers)
        assert resp.status_code == 401
        assert resp.json()["errors"][0]["field"] == "Authorization"
    client.force_login(outsider)  # logged in but not staff
    assert client.get("/metrics").status_code == 401


def test_metrics_refuses_when_no_token_is_configured(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401


def test_metrics_parse_and_count_ingest_processing_and_alerts(client, settings, post, drain, staff_user):
    good = [event("ib_call_logged", student_id="stu_m") for _ in range(3)]
    bad = event("ib_call_logged", reason="billing_question")  # no student_id: rejected
    resp = post({"events": [*good, bad]})
    assert resp.status_code == 202 and resp.json()["rejected"] == 1
    drain()
    resp = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {settings.METRICS_TOKEN}")
    assert resp.status_code == 200
    assert resp["Content-Type"].startswith("text/plain")
    fams = families(resp.content.decode())
    assert sample(fams, "iops_ingest_events_accepted", "iops_ingest_events_accepted_total") == 3
    assert sample(fams, "iops_ingest_events_rejected", "iops_ingest_events_rejected_total") == 1
    assert sample(fams, "iops_events_processed", "iops_events_processed_total") == 3
    assert sample(fams, "iops_batch_duration_seconds", "iops_batch_duration_seconds_count") >= 1
    assert sample(fams, "iops_batch_duration_seconds", "iops_batch_duration_seconds_bucket", le="+Inf") >= 1
    assert sample(fams, "iops_stream_up") == 1
    assert sample(fams, "iops_stream_backlog", state="waiting") == 0
    assert sample(fams, "iops_stream_dead_letters") == 0
    worker = WorkerHeartbeat.objects.get().name
    assert (
        sample(fams, "iops_worker_events_processed", "iops_worker_events_processed_total", worker=worker) == 3
    )
    # Three IB calls in 14 days raise the ib_calls alert: it shows up by severity and status.
    alerts = fams["iops_alerts"].samples
    assert alerts and all({"severity", "status"} <= s.labels.keys() for s in alerts)
    assert sum(s.value for s in alerts) >= 1
    # A staff session sees the same figures.
    client.force_login(staff_user)
    again = families(client.get("/metrics").content.decode())
    assert sample(again, "iops_ingest_events_accepted", "iops_ingest_events_accepted_total") == 3


def test_metrics_counts_refusals_and_waiting_backlog(client, settings, post):
    post({"events": [event("ib_call_logged", student_id="s") for _ in range(4)]})
    fams = families(
        client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {settings.METRICS_TOKEN}").content.decode()
    )
    assert sample(fams, "iops_stream_backlog", state="waiting") == 4
    assert sample(fams, "iops_events_processed", "iops_events_processed_total") == 0


# --- request ids ----------------------------------------------------------------------------------


def test_request_id_is_carried_into_the_worker_batch_logs(post, client, api_key, drain, caplog):
    caplog.set_level(logging.DEBUG, logger="pipeline.batch")
    caplog.handler.addFilter(RequestIdFilter())
    resp = client.post(
        "/api/ingest",
        data='{"event_type": "ib_call_logged", "student_id": "s9"}',
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {api_key}",
        HTTP_X_REQUEST_ID="req-ops-42",
    )
    assert resp.status_code == 202 and resp["X-Request-ID"] == "req-ops-42"
    caplog.clear()
    drain()
    batch_lines = [r for r in caplog.records if r.getMessage() == "batch processed"]
    assert batch_lines and all(r.request_id == "req-ops-42" for r in batch_lines)


# --- pipeline_status ------------------------------------------------------------------------------


def _status(*args: str) -> str:
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("pipeline_status", *args, stdout=out)
    return out.getvalue()


def test_pipeline_status_json_reports_backlog_throughput_dead_letters_and_workers(post, drain):
    from ingest.models import StreamDeadLetter

    post({"events": [event("ib_call_logged", student_id=f"s{i}") for i in range(5)]})
    drain()
    post({"events": [event("ib_call_logged", student_id="w") for _ in range(2)]})  # left waiting
    StreamDeadLetter.objects.create(backend="database", message_id="1", raw="x", error="malformed")
    data = json.loads(_status("--json"))
    oldest = data["stream"].pop("oldest_seconds")
    assert data["stream"] == {"backend": "database", "available": True, "waiting": 2, "in_flight": 0}
    assert 0 <= oldest < 60
    assert data["events_per_second_1m"] == round(5 / 60, 2)
    assert data["dead_letters"]["stream"] == 1
    [worker] = data["workers"]
    assert worker["processed"] == 5 and worker["batches"] >= 1 and worker["age_seconds"] < 5


def test_pipeline_status_table(post, drain):
    assert "workers: no heartbeat recorded" in _status()
    post(event("ib_call_logged", student_id="s"))
    drain()
    text = _status()
    assert "stream (database): 0 waiting, 0 in flight" in text
    assert "dead letters: stream 0" in text
    name = WorkerHeartbeat.objects.get().name
    row = next(line for line in text.splitlines() if line.startswith(name))
    assert row.split()[-3] == "1"  # processed


def test_oldest_unprocessed_event_age_is_the_consumer_lag_in_time(client, settings, post, drain):
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        post({"events": [event("ib_call_logged", student_id="s") for _ in range(3)]})
    with time_machine.travel(start + timedelta(seconds=42), tick=False):
        post(event("ib_call_logged", student_id="s"))  # a newer one does not hide the oldest
        assert json.loads(_status("--json"))["stream"]["oldest_seconds"] == 42.0
        assert "stream (database): 4 waiting, 0 in flight, oldest 42.0 s old" in _status()
        fams = families(
            client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {settings.METRICS_TOKEN}").content.decode()
        )
        assert sample(fams, "iops_stream_oldest_unprocessed_seconds") == 42.0
        drain()
        assert json.loads(_status("--json"))["stream"]["oldest_seconds"] is None
        fams = families(
            client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {settings.METRICS_TOKEN}").content.decode()
        )
        assert "iops_stream_oldest_unprocessed_seconds" not in fams


@pytest.mark.redis
def test_oldest_unprocessed_event_age_on_the_redis_stream(post, drain, redis_stream_settings):
    import redis

    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    post({"events": [event("ib_call_logged", student_id="s") for _ in range(2)]})
    server_now = client.time()  # the age is measured on the Redis server's clock (entry ids)
    with time_machine.travel(server_now[0] + server_now[1] / 1e6 + 7, tick=False):
        oldest = json.loads(_status("--json"))["stream"]["oldest_seconds"]
    assert 7 <= oldest < 8
    drain()
    assert json.loads(_status("--json"))["stream"]["oldest_seconds"] is None


def test_pipeline_status_reports_an_unreachable_stream(settings):
    from ingest.streams import get_stream

    settings.IOPS_STREAM = "redis"
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0"
    get_stream.cache_clear()
    assert json.loads(_status("--json"))["stream"]["available"] is False
    assert "UNAVAILABLE" in _status()


# --- retention ------------------------------------------------------------------------------------


def test_retention_task_deletes_expired_rows_in_bounded_batches(settings):
    from datetime import UTC, datetime

    from ingest.models import Event, SuspectDelivery
    from insights.models import Insight
    from iops.celery import app
    from iops.tasks import retention
    from metrics.models import GlobalMinute, StudentHourly, TutorHourly

    settings.RETENTION_BATCH_SIZE = 3
    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

    def ev(i: int, days: float) -> Event:
        at = now - timedelta(days=days)
        return Event(
            event_id=f"r{i}",
            event_type="ib_call_logged",
            occurred_at=at,
            received_at=at,
            processed_at=at,
            student_id="s",
            payload={"student_id": "s"},
        )

    # 6 raw events past 45 days interleaved by id with 6 recent ones; buckets either side of 90 days.
    Event.objects.bulk_create([ev(i, 46 + i if i % 2 == 0 else 44 - i / 10) for i in range(12)])
    for days in (91, 95, 89):
        GlobalMinute.objects.create(minute=now - timedelta(days=days), received=1)
        StudentHourly.objects.create(student_id="s", hour=now - timedelta(days=days))
        TutorHourly.objects.create(tutor_id="t", hour=now - timedelta(days=days))
    for days in (100, 10):
        Insight.objects.create(
            entity_type="student",
            entity_id="s",
            risk=0.5,
            level="medium",
            explanation="x",
            model="rules",
            scored_at=now - timedelta(days=days),
        )
    # Suspect records a dead worker left behind after settling its slice: kept a week.
    for mid, days in (("1", 8), ("2", 1)):
        SuspectDelivery.objects.create(
            backend="database",
            message_id=mid,
            slice_size=5,
            consumer="w",
            started_at=now - timedelta(days=days),
        )
    assert "retention" in {e["task"].split(".")[-1] for e in app.conf.beat_schedule.values()}
    with time_machine.travel(now, tick=False):
        out = retention.delay().get()
    kept = sorted(Event.objects.values_list("event_id", flat=True))
    assert kept == sorted(f"r{i}" for i in range(12) if i % 2)  # the 6 recent ones
    assert out["deleted"]["ingest.Event"] == 6
    assert out["batches"] >= 2 + 3  # 6 events in batches of 3, plus one per bucket table
    assert out["complete"] is True
    assert GlobalMinute.objects.count() == StudentHourly.objects.count() == TutorHourly.objects.count() == 1
    assert GlobalMinute.objects.get().minute == now - timedelta(days=89)
    assert list(Insight.objects.values_list("scored_at", flat=True)) == [now - timedelta(days=10)]
    assert list(SuspectDelivery.objects.values_list("message_id", flat=True)) == ["2"]
    # A second run finds nothing more to do.
    with time_machine.travel(now, tick=False):
        assert sum(retention.delay().get()["deleted"].values()) == 0


def test_retention_stops_when_time_is_up_and_the_next_run_continues(settings):
    from datetime import UTC, datetime

    from ingest.models import Event
    from iops.retention import retention_run

    now = datetime(2026, 6, 1, tzinfo=UTC)
    old = now - timedelta(days=60)
    Event.objects.bulk_create(
        Event(
            event_id=f"o{i}",
            event_type="ib_call_logged",
            occurred_at=old,
            received_at=old,
            processed_at=old,
            payload={},
        )
        for i in range(4)
    )
    first = retention_run(now=now, max_seconds=-1)
    assert first.complete is False and Event.objects.count() == 4
    second = retention_run(now=now, max_seconds=60)
    assert second.complete is True and Event.objects.count() == 0


# --- production settings and logs (subprocesses: settings are read once per process) --------------

ROOT = Path(__file__).resolve().parent.parent


def _production_env(tmp_path: Path, **extra: str) -> dict:
    import secrets

    keep = ("PATH", "HOME", "LANG", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(
        {
            "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/h_ops2_unused",
            "REDIS_URL": "redis://127.0.0.1:6379/0",
            "SECRET_KEY": secrets.token_urlsafe(64),
            "ALLOWED_HOSTS": "iops.example.com",
            "CSRF_TRUSTED_ORIGINS": "https://iops.example.com",
            "SECURE_SSL_REDIRECT": "true",
            "SECURE_HSTS_SECONDS": "31536000",
            "SECURE_HSTS_PRELOAD": "true",
            "IOPS_VAR_DIR": str(tmp_path),
            **extra,
        }
    )
    return env


def test_check_deploy_is_clean_with_production_variables(tmp_path):
    out = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=_production_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "System check identified no issues" in out.stdout


def test_production_settings_default_to_safe_values(tmp_path):
    code = (
        "from django.conf import settings as s; import json; print(json.dumps({"
        "'debug': s.DEBUG, 'session': s.SESSION_COOKIE_SECURE, 'csrf': s.CSRF_COOKIE_SECURE,"
        "'log': s.LOG_FORMAT, 'hosts': s.ALLOWED_HOSTS, 'worker': s.WORKER_EXPECTED}))"
    )
    env = _production_env(tmp_path)
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "debug": False,
        "session": True,
        "csrf": True,
        "log": "json",
        "hosts": ["iops.example.com"],
        "worker": True,
    }
    del env["SECRET_KEY"]
    refused = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert refused.returncode != 0 and "SECRET_KEY must be set" in refused.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [("SECRET_KEY", "change-me-to-a-long-random-string"), ("METRICS_TOKEN", "change-me-too")],
)
def test_a_production_start_refuses_the_env_example_placeholders(tmp_path, name, value):
    """Issue 21: the placeholders of .env.example stop a production start (they only drew a warning)."""
    refused = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=_production_env(tmp_path, **{name: value}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode != 0
    assert f"{name} is still the .env.example placeholder" in refused.stderr


def test_json_logs_are_one_object_per_line(tmp_path):
    # A real code path that logs at INFO: a retention run over the embedded SQLite database.
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "IOPS_STREAM")}
    env.update({"IOPS_VAR_DIR": str(tmp_path), "LOG_FORMAT": "json", "IOPS_TESTING": "1"})
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=120
    )
    code = (
        "import logging; from django.utils import timezone; from iops.retention import retention_run;"
        "from iops.lib.request_id import request_id_var; request_id_var.set('rid-json-1');"
        "retention_run(now=timezone.now()); logging.getLogger('ops.test').warning('two\\nlines')"
    )
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    retention = next(r for r in records if r["logger"] == "iops.retention")
    assert retention["level"] == "INFO" and retention["message"].startswith("retention: deleted 0 rows")
    assert retention["request_id"] == "rid-json-1" and "ts" in retention
    assert retention["complete"] is True
    assert next(r for r in records if r["logger"] == "ops.test")["message"] == "two\nlines"


def test_metrics_report_churn_model_calls_and_fallbacks(client, settings):
    from insights.models import Insight

    now = timezone.now()
    for model, reason in (
        ("bedrock:haiku", ""),
        ("local-logistic", "bedrock throttled"),
        ("local-logistic", ""),
    ):
        Insight.objects.create(
            entity_type="student",
            entity_id="s1",
            risk=0.7,
            level="high",
            explanation="x",
            model=model,
            fallback_reason=reason,
            scored_at=now - timedelta(minutes=5),
        )
    fams = families(
        client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {settings.METRICS_TOKEN}").content.decode()
    )
    assert sample(fams, "iops_insights", model="local-logistic", fallback="true") == 1
    assert sample(fams, "iops_insights", model="local-logistic", fallback="false") == 1
    assert sample(fams, "iops_insights", model="bedrock:haiku", fallback="false") == 1
    assert sample(fams, "iops_churn_model_calls", outcome="fallbacks") == 1
    assert sample(fams, "iops_churn_model_calls", outcome="local-logistic") == 2


# --- docker-compose.yml stays honest (Docker does not run here: its commands are checked instead) ---


def _env_example() -> dict[str, str]:
    """KEY=value lines of .env.example, commented-out ones included (`# KEY=value`)."""
    import re

    pairs = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        m = re.match(r"^#?\s*([A-Z][A-Z0-9_]+)=(.*)$", line.strip())
        if m:
            pairs[m.group(1)] = m.group(2)
    return pairs


def _example_process_env(tmp_path: Path) -> dict[str, str]:
    """The environment a compose container gets from `.env` copied from .env.example (set values)."""
    import re
    import secrets

    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "VIRTUAL_ENV")}
    for line in (ROOT / ".env.example").read_text().splitlines():
        m = re.match(r"^([A-Z][A-Z0-9_]+)=(.*)$", line.strip())
        if m:
            env[m.group(1)] = m.group(2)
    env["SECRET_KEY"] = secrets.token_urlsafe(64)  # the operator's step after `cp .env.example .env`
    env["METRICS_TOKEN"] = secrets.token_urlsafe(32)  # ditto (README: set SECRET_KEY, hosts, METRICS_TOKEN)
    env["IOPS_VAR_DIR"] = str(tmp_path)
    return env


def _check_entry_point(argv: list[str], env: dict[str, str], web_port: str | None) -> str:
    """Fail unless `argv` is a command this project really runs; returns what it checked."""
    import re

    from django.core.management import get_commands, load_command_class
    from django.urls import resolve

    if argv[0] == "daphne":
        from daphne.cli import CommandLineInterface

        args = CommandLineInterface().parser.parse_args(argv[1:])
        code = f"from daphne.utils import import_by_path; import_by_path({args.application!r})"
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, f"{argv}: {out.stderr[-2000:]}"
        return f"daphne {args.application} :{args.port}"
    if argv[0] == "celery":
        # click validates every option before it honours --help, and `-A iops` must import the app.
        out = subprocess.run(
            [str(Path(sys.executable).parent / "celery"), *argv[1:], "--help"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, f"{argv}: {out.stdout[-500:]}{out.stderr[-2000:]}"
        return " ".join(argv[:4])
    if argv[:2] == ["python", "manage.py"]:
        name = argv[2]
        commands = get_commands()
        assert name in commands, f"no management command {name!r}"
        load_command_class(commands[name], name).create_parser("manage.py", name).parse_args(argv[3:])
        return f"manage.py {name}"
    if argv[:2] == ["python", "-c"]:
        compile(argv[2], "<healthcheck>", "exec")
        url = re.search(r"http://127\.0\.0\.1:(\d+)(/[\w/-]*)", argv[2])
        assert url, f"healthcheck probes no local URL: {argv[2]}"
        assert url.group(1) == web_port, f"probes port {url.group(1)}, daphne listens on {web_port}"
        resolve(url.group(2))  # Resolver404 when the path is not served
        return f"probe {url.group(2)}"
    raise AssertionError(f"unknown entry point {argv}")


def test_compose_file_runs_only_real_entry_points_of_this_project(tmp_path):
    import yaml

    spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = spec["services"]
    assert {"postgres", "redis", "migrate", "web", "worker", "beat"} <= services.keys()
    env = _example_process_env(tmp_path)
    web = services["web"]["command"]
    web_port = web[web.index("-p") + 1]
    checked = []
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
        for volume in svc.get("volumes", []):
            assert volume.split(":")[0] in spec.get("volumes", {}), f"{name}: undeclared volume {volume}"
        if "build" not in svc:  # postgres and redis: upstream images, their own commands
            continue
        assert svc["env_file"] == ".env"
        checked.append(_check_entry_point(svc["command"], env, web_port))
        test = svc.get("healthcheck", {}).get("test")
        if test:
            assert test[0] == "CMD", f"{name}: healthcheck must run a command, not a shell line"
            checked.append(_check_entry_point(test[1:], env, web_port))
    # The three production roles of the contract, and one beat only (no `replicas`/scale on beat).
    assert "daphne iops.asgi:application :8000" in checked
    assert any(c.startswith("celery -A iops worker") for c in checked)
    assert any(c.startswith("celery -A iops beat") for c in checked)
    assert "deploy" not in services["beat"]
    # The Dockerfile's default command is the web role too.
    import re

    cmd = re.search(r"^CMD (\[.*\])$", (ROOT / "Dockerfile").read_text(), re.M)
    assert cmd and _check_entry_point(json.loads(cmd.group(1)), env, web_port).startswith("daphne")
    # `COPY . .` must not carry secrets or local state into the image.
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".env", ".venv", "var", ".git"} <= ignored


def test_static_files_are_served_by_whitenoise_without_debug(client, settings):
    assert settings.DEBUG is False
    resp = client.get("/static/vendor/htmx.min.js")
    assert resp.status_code == 200
    assert b"htmx" in b"".join(resp.streaming_content)
    assert "max-age" in resp["Cache-Control"]  # WhiteNoise's header, not Django's debug view


def test_env_example_names_only_settings_that_exist_and_loads(tmp_path):
    source = (ROOT / "iops" / "settings.py").read_text()
    unknown = [k for k in _env_example() if f'"{k}"' not in source]
    assert not unknown, f".env.example names variables the settings never read: {unknown}"
    # The example as an operator would use it (plus a real SECRET_KEY) passes Django's checks.
    out = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=_example_process_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_celery_worker_logs_through_the_project_logging_config(tmp_path):
    """The worker role writes the same JSON lines as the web role, not Celery's own text format."""
    import re
    import signal
    import time

    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "IOPS_STREAM")}
    env.update({"IOPS_VAR_DIR": str(tmp_path), "LOG_FORMAT": "json", "IOPS_TESTING": "1"})
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=120
    )
    err = tmp_path / "worker.err"
    with open(err, "w") as sink:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "celery"), "-A", "iops", "worker", "--pool", "solo", "-l", "INFO"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=sink, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while "celery@" not in err.read_text() or "stream worker started" not in err.read_text():
                assert proc.poll() is None and time.monotonic() < deadline, err.read_text()[-2000:]
                time.sleep(0.1)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    lines = err.read_text().splitlines()
    assert not [line for line in lines if re.match(r"^\[\d{4}-\d\d-\d\d ", line)]  # Celery's format
    records = [json.loads(line) for line in lines if line.startswith("{")]
    messages = {(r["logger"], r["message"]) for r in records}
    assert {
        ("ingest.worker", "stream worker started"),
        ("ingest.worker", "stream worker stopped"),
    } <= messages
    assert ("celery.apps.worker", "celery@" + socket.gethostname() + " ready.") in messages


def test_every_beat_entry_names_a_registered_task_and_serve_runs_them_all():
    """Beat (production) and `serve` (embedded) share one schedule: a renamed or missing task fails here,
    not silently at run time. Retention and churn scoring of the riskiest entities included."""
    from iops.celery import app
    from iops.management.commands.serve import beat_entries

    entries = dict(beat_entries())
    assert {
        "alerts.refresh_stale",
        "alerts.sweep",
        "alerts.send_due_deliveries",
        "ingest.retention",
        "insights.score_riskiest",
        "simulator.simulate_tick",
    } <= set(entries)
    for name, seconds in entries.items():
        assert name in app.tasks and seconds >= 5, name
