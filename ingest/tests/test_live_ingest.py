"""POST /api/ingest on the real one-process server (daphne + the lean route + the embedded worker),
over a real socket: accepted events reach the snapshots, oversized and chunked bodies are refused."""

from __future__ import annotations

import time

import httpx
import pytest

from tests import livesrv

pytestmark = pytest.mark.embedded


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = livesrv.start(tmp_path_factory.mktemp("live-ingest"))
    yield srv
    livesrv.stop(srv)


def test_events_posted_over_http_reach_the_student_snapshot(server):
    headers = {"Authorization": f"Bearer {server.api_key}"}
    one = {"event_type": "ib_call_logged", "student_id": "stu_live", "reason": "other"}
    resp = httpx.post(f"{server.url}/api/ingest", json=one, headers=headers, timeout=10)
    assert resp.status_code == 202 and resp.headers["X-Request-ID"]
    batch = {"events": [one, {**one, "priority": "urgent"}]}
    resp = httpx.post(f"{server.url}/api/ingest", json=batch, headers=headers, timeout=10)
    assert resp.status_code == 202
    assert [r["status"] for r in resp.json()["results"]] == ["accepted", "rejected"]

    deadline = time.monotonic() + 20  # the embedded worker processes in the background
    while time.monotonic() < deadline:
        snap = httpx.get(f"{server.url}/api/entities/student/stu_live", headers=headers, timeout=10)
        if snap.status_code == 200 and snap.json()["ib_calls_7d"] == 2:
            break
        time.sleep(0.2)
    assert snap.status_code == 200 and snap.json()["ib_calls_7d"] == 2


def test_oversized_bodies_are_refused_even_without_a_content_length(server):
    headers = {"Authorization": f"Bearer {server.api_key}", "Content-Type": "application/json"}
    big = b"[" + b"1," * (600 * 1024) + b"1]"
    resp = httpx.post(f"{server.url}/api/ingest", content=big, headers=headers, timeout=10)
    assert resp.status_code == 413

    def chunks():
        for _ in range(20):
            yield b" " * (128 * 1024)

    resp = httpx.post(f"{server.url}/api/ingest", content=chunks(), headers=headers, timeout=10)
    assert resp.status_code == 413 and resp.json()["errors"][0]["field"] == "body"


def test_wrong_method_and_missing_key_over_http(server):
    assert httpx.get(f"{server.url}/api/ingest", timeout=10).status_code == 405
    resp = httpx.post(f"{server.url}/api/ingest", json={"event_type": "ib_call_logged"}, timeout=10)
    assert resp.status_code == 401 and resp.headers["WWW-Authenticate"]
