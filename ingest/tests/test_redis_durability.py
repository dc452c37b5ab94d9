"""Issue 21, finding 2: Redis without its append-only file loses every accepted, unprocessed event on a
restart (5,073 accepted → 0 stored). The Redis stream reads the server's persistence (INFO persistence,
CONFIG GET appendfsync): a production start of the web or worker role on such a Redis is refused unless
REDIS_REQUIRE_AOF=false, and /healthz reports it. Each test runs a redis-server of its own (with and
without AOF), so the machine's Redis configuration is neither relied on nor changed."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import pytest

from tests.livesrv import ROOT, free_port

pytestmark = [pytest.mark.redis, pytest.mark.django_db]


@pytest.fixture
def own_redis(tmp_path):
    """Start a redis-server with the given persistence flags; yields a factory returning its URL."""
    import redis

    procs: list[subprocess.Popen] = []

    def start(*flags: str) -> str:
        port = free_port()
        data = tmp_path / f"redis-{port}"
        data.mkdir()
        proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--dir",
                str(data),
                *flags,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(proc)
        client = redis.Redis(port=port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            with suppress(redis.ConnectionError):
                if client.ping():
                    return f"redis://127.0.0.1:{port}/0"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


def _use(settings, url: str) -> None:
    from ingest.streams import get_stream

    settings.IOPS_STREAM = "redis"
    settings.REDIS_URL = url
    settings.REDIS_REQUIRE_AOF = True
    get_stream.cache_clear()


def test_healthz_names_a_redis_without_aof(client, settings, own_redis):
    _use(settings, own_redis("--appendonly", "no"))
    resp = client.get("/healthz?checks=stream")
    assert resp.status_code == 503
    assert resp.json()["checks"]["stream"] == (
        "error: redis persistence off (appendonly no): accepted events are lost on a restart"
    )


def test_healthz_is_ok_on_a_redis_with_aof_and_reads_its_fsync_policy(client, settings, own_redis):
    from ingest.streams import get_stream

    _use(settings, own_redis("--appendonly", "yes", "--appendfsync", "everysec"))
    assert client.get("/healthz?checks=stream").json()["checks"] == {"stream": "ok"}
    assert get_stream().persistence() == {"aof_enabled": "1", "appendfsync": "everysec"}


def _production_env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "VIRTUAL_ENV")}
    env.update(
        {
            "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/h21_unused",
            "REDIS_URL": redis_url,
            "SECRET_KEY": secrets.token_urlsafe(64),
            "LOG_LEVEL": "WARNING",
            **extra,
        }
    )
    return env


def _web_start(env: dict[str, str]) -> subprocess.CompletedProcess:
    """What `daphne iops.asgi:application` does first: import the application."""
    return subprocess.run(
        [sys.executable, "-c", "import iops.asgi"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_production_start_refuses_a_redis_without_aof_unless_opted_out(own_redis, tmp_path):
    url = own_redis("--appendonly", "no")
    refused = _web_start(_production_env(url, IOPS_VAR_DIR=str(tmp_path)))
    assert refused.returncode != 0
    assert "redis persistence off (appendonly no)" in refused.stderr
    assert "REDIS_REQUIRE_AOF=false" in refused.stderr
    opted_out = _web_start(_production_env(url, IOPS_VAR_DIR=str(tmp_path), REDIS_REQUIRE_AOF="false"))
    assert opted_out.returncode == 0, opted_out.stderr[-2000:]
    durable = _web_start(_production_env(own_redis("--appendonly", "yes"), IOPS_VAR_DIR=str(tmp_path)))
    assert durable.returncode == 0, durable.stderr[-2000:]


def test_a_production_worker_start_refuses_a_redis_without_aof(own_redis, tmp_path):
    env = _production_env(own_redis("--appendonly", "no"), IOPS_VAR_DIR=str(tmp_path))
    worker = subprocess.run(
        [str(Path(sys.executable).parent / "celery"), "-A", "iops", "worker", "--pool", "solo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "redis persistence off (appendonly no)" in worker.stdout + worker.stderr
