"""Issue 21, finding 3, over raw sockets against the production web command (`daphne
iops.asgi:application`, a subprocess on its own SQLite file): a request is judged on its line and
headers before its body is read — 401 without a credential, 413 for a declared length over the limit,
413 as soon as a chunked body passes it — and a request that is not whole in time is answered 408 and
closed (HTTP_READ_TIMEOUT_SECONDS, short here). Memory stays flat while an anonymous client pushes a
large body."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.livesrv import ROOT, _manage, free_port

pytestmark = pytest.mark.embedded

LIMIT = 64 * 1024
TIMEOUT = 1.5


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("limits")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "IOPS_STREAM")}
    env.update(
        {
            "IOPS_VAR_DIR": str(tmp),
            "IOPS_TESTING": "1",
            "INGEST_MAX_BODY_BYTES": str(LIMIT),
            "HTTP_READ_TIMEOUT_SECONDS": str(TIMEOUT),
            "LOG_LEVEL": "WARNING",
        }
    )
    _manage(env, "migrate", "--noinput", "-v", "0")
    key = _manage(env, "create_api_key", "limits").strip()
    port = free_port()
    log = open(tmp / "daphne.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "daphne"),
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "iops.asgi:application",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        proc.kill()
        raise RuntimeError((tmp / "daphne.log").read_text()[-2000:])
    yield port, key, proc
    proc.terminate()
    proc.wait(timeout=20)
    log.close()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def head(path: str, *headers: str, method: str = "POST") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock: socket.socket, timeout: float = 10, *, then_closed: bool = True):
    """(status, headers, body, closed): reads one response, then (if asked) whether the server closed."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"closed without a response: {data!r}")
        data += chunk
    raw_head, body = data.split(b"\r\n\r\n", 1)
    lines = raw_head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        body += sock.recv(65536)
    if not then_closed:
        return int(lines[0].split()[1]), headers, body, False
    try:
        closed = sock.recv(1) == b""
    except (ConnectionResetError, TimeoutError):
        closed = True
    return int(lines[0].split()[1]), headers, body, closed


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("path", ["/api/ingest", "/api/alerts/1/acknowledge", "/alerts/1/resolve"])
def test_anonymous_post_is_401_on_its_headers_before_any_body(web, path):
    port, _key, _proc = web
    with connect(port) as sock:
        started = time.monotonic()
        sock.sendall(head(path, "Content-Type: application/json", "Content-Length: 300000000"))
        status, headers, body, closed = read_response(sock)
    assert status == 401 and closed and time.monotonic() - started < 1
    assert json.loads(body)["errors"][0]["field"] == "Authorization"
    assert headers["content-type"] == "application/json"


def test_an_anonymous_flood_does_not_grow_the_web_process(web):
    port, _key, proc = web
    before = rss_kb(proc.pid)
    pushed = 0
    with connect(port) as sock:
        sock.sendall(head("/api/ingest", "Content-Type: application/json", "Content-Length: 300000000"))
        chunk = b"x" * (1 << 20)
        try:
            while pushed < 100 << 20:
                sock.sendall(chunk)
                pushed += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
    time.sleep(0.5)
    assert pushed < 100 << 20, "the server kept reading an anonymous body"
    assert rss_kb(proc.pid) - before < 20_000  # KiB


def test_declared_length_over_the_limit_is_413_without_reading(web):
    port, key, _proc = web
    with connect(port) as sock:
        sock.sendall(
            head(
                "/api/ingest",
                f"Authorization: Bearer {key}",
                "Content-Type: application/json",
                "Content-Length: 99999999",
            )
        )
        status, _headers, body, closed = read_response(sock)
    assert status == 413 and closed
    assert json.loads(body)["errors"][0]["field"] == "body"


def test_chunked_body_is_cut_off_at_the_limit(web):
    port, key, _proc = web
    sent = 0
    with connect(port) as sock:
        sock.sendall(
            head(
                "/api/ingest",
                f"X-API-Key: {key}",
                "Content-Type: application/json",
                "Transfer-Encoding: chunked",
            )
        )
        chunk = b"4000\r\n" + b" " * 0x4000 + b"\r\n"
        try:
            while sent < 50 * LIMIT:
                sock.sendall(chunk)
                sent += 0x4000
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, _headers, body, closed = read_response(sock)
    assert status == 413 and closed and sent < 50 * LIMIT
    assert json.loads(body)["errors"][0]["field"] == "body"


def test_a_dripped_body_is_408_once_the_read_timeout_passes(web):
    port, key, _proc = web
    with connect(port) as sock:
        started = time.monotonic()
        sock.sendall(
            head("/api/ingest", f"X-API-Key: {key}", "Content-Type: application/json", "Content-Length: 100")
        )
        sock.settimeout(0.3)
        answer = b""
        while time.monotonic() - started < TIMEOUT + 5 and not answer:
            try:
                sock.sendall(b" ")  # one byte every 0.3 s: each resets Twisted's idle timer
                answer = sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert TIMEOUT - 0.2 < elapsed < TIMEOUT + 3


def test_dripped_headers_are_408_and_a_silent_connection_is_closed(web):
    port, _key, _proc = web
    with connect(port) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        sock.settimeout(0.3)
        answer = b""
        while time.monotonic() - started < TIMEOUT + 5 and not answer:
            try:
                sock.sendall(b"X")  # a header name that never ends
                answer = sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    with connect(port) as sock:
        started = time.monotonic()
        sock.settimeout(TIMEOUT + 5)
        assert sock.recv(1) == b""  # no request line at all: closed, no answer
        assert time.monotonic() - started < TIMEOUT + 3


def test_requests_within_the_limits_still_work_on_a_kept_alive_connection(web):
    port, key, _proc = web
    event = json.dumps({"event_type": "ib_call_logged", "student_id": "stu_limits"}).encode()
    with connect(port) as sock:
        for _ in range(2):
            sock.sendall(
                head(
                    "/api/ingest",
                    f"Authorization: Bearer {key}",
                    "Content-Type: application/json",
                    f"Content-Length: {len(event)}",
                )
                + event
            )
            status, _headers, body, _closed = read_response(sock, then_closed=False)
            assert status == 202 and json.loads(body)["accepted"] == 1
    login = httpx.post(f"http://127.0.0.1:{port}/accounts/login/", data={"username": "x", "password": "y"})
    assert login.status_code != 401  # the login form is for the anonymous (CSRF answers it here)
