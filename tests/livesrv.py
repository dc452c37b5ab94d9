"""Start the real one-process server (`manage.py serve`) on a free port with its own SQLite file."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    url: str
    api_key: str
    username: str
    password: str
    proc: subprocess.Popen
    env: dict
    tmp: Path | None = None
    simulate: float = 0


def _manage(env: dict, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    if out.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed: {out.stderr[-2000:]}")
    return out.stdout


def start(
    tmp: Path, *, extra_env: dict | None = None, port: int | None = None, simulate: float = 0
) -> LiveServer:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "IOPS_STREAM")}
    env.update(
        {
            "IOPS_VAR_DIR": str(tmp),
            "IOPS_TESTING": "1",
            "DJANGO_SUPERUSER_PASSWORD": "ops-pass-123",
            "DASHBOARD_PUSH_INTERVAL_MS": "100",
            **(extra_env or {}),
        }
    )
    _manage(env, "migrate", "--noinput", "-v", "0")
    _manage(env, "createsuperuser", "--noinput", "--username", "ops", "--email", "ops@example.com")
    # Tests send events and read the API back with it (a new key may only ingest: issue 21).
    key = _manage(env, "create_api_key", "browser", "--scopes", "ingest,read").strip()
    server = LiveServer("", key, "ops", "ops-pass-123", None, env, simulate=simulate)  # type: ignore[arg-type]
    _launch(server, tmp, port or free_port())
    return server


def _launch(server: LiveServer, tmp: Path, port: int) -> None:
    log = open(tmp / "server.log", "a")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port), "--simulate", str(server.simulate)],
        cwd=ROOT,
        env=server.env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    server.url, server.proc, server.tmp = url, proc, tmp
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server did not start: {(tmp / 'server.log').read_text()[-2000:]}")


def manage(server: LiveServer, *args: str) -> str:
    """Run a management command against the live server's database."""
    return _manage(server.env, *args)


def restart(server: LiveServer, *, between=None) -> None:
    """Stop the server, run `between()` while it is down, start it again on the same port."""
    port = int(server.url.rsplit(":", 1)[1])
    stop(server)
    if between is not None:
        between()
    _launch(server, server.tmp, port)


def stop(server: LiveServer) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.proc.kill()
