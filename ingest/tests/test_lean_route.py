"""The lean ASGI route for POST /api/ingest (ingest/asgi.py) must behave exactly like the Django view:
the whole ingest contract suite runs again here through the real ASGI application (iops.asgi), plus
the checks the Django test client cannot make (headers, body read limit, key cache, routing)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from ingest.tests.test_ingest_api import *  # noqa: F403 - the same contract, through the lean route
from ingest.tests.test_ingest_api import SEED_FLAT

pytestmark = pytest.mark.django_db(transaction=True)  # the route's worker threads use their own connections


class _Response:
    """httpx response with the Django test response's `resp["Header"]` access the contract tests use."""

    def __init__(self, resp: httpx.Response):
        self.raw = resp
        self.status_code = resp.status_code
        self.headers = resp.headers

    def json(self):
        return self.raw.json()

    def __getitem__(self, name: str) -> str:
        return self.raw.headers[name]


def asgi_request(method: str, path: str, *, headers: dict[str, str], content: bytes = b"") -> _Response:
    from iops.asgi import application

    async def go():
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await client.request(method, path, headers=headers, content=content)

    return _Response(asyncio.run(go()))


@pytest.fixture(autouse=True)
def _close_thread_connections(monkeypatch):
    """The route's pool threads keep their connections (CONN_MAX_AGE); close them after each request
    here so the test database can be dropped at the end."""
    from django.db import connection

    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)


@pytest.fixture
def post(api_key):
    def _post(
        body, *, key: str | None = None, content_type: str = "application/json", raw: bytes | None = None
    ):
        data = raw if raw is not None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {key or api_key}", "Content-Type": content_type}
        return asgi_request("POST", "/api/ingest", headers=headers, content=data)

    return _post


def test_lean_route_answers_without_django_and_adds_the_same_headers(post, client, api_key):
    lean = post(SEED_FLAT)
    django = client.post(
        "/api/ingest",
        data=json.dumps(SEED_FLAT),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {api_key}",
    )
    assert lean.status_code == django.status_code == 202
    for name in ("Content-Type", "X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy"):
        assert lean[name] == django[name], name
    assert lean["X-Request-ID"]


def test_get_and_missing_key_through_the_lean_route(api_key):
    get = asgi_request("GET", "/api/ingest", headers={"Authorization": f"Bearer {api_key}"})
    assert get.status_code == 405 and get["Allow"] == "POST"
    anon = asgi_request("POST", "/api/ingest", headers={"Content-Type": "application/json"}, content=b"{}")
    assert anon.status_code == 401 and anon.json()["errors"][0]["field"] == "Authorization"
    assert 'Bearer realm="iops"' in anon["WWW-Authenticate"]
    x_key = asgi_request(
        "POST",
        "/api/ingest",
        headers={"X-API-Key": api_key, "Content-Type": "application/json; charset=utf-8"},
        content=json.dumps(SEED_FLAT).encode(),
    )
    assert x_key.status_code == 202


def test_declared_length_over_the_limit_is_413_before_reading(api_key, settings):
    settings.INGEST_MAX_BODY_BYTES = 2048
    resp = asgi_request(
        "POST",
        "/api/ingest",
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
        content=b" " * 4096,
    )
    assert resp.status_code == 413 and resp.json()["errors"][0]["field"] == "body"


def test_unknown_host_is_refused_like_django(api_key):
    resp = asgi_request(
        "POST",
        "/api/ingest",
        headers={
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "Host": "evil.example",
        },
        content=json.dumps(SEED_FLAT).encode(),
    )
    assert resp.status_code == 400 and resp.json()["errors"][0]["field"] == "Host"


def test_revocation_in_this_process_takes_effect_at_once(post):
    from ingest.keys import api_keys_revoke
    from ingest.models import ApiKey

    assert post(SEED_FLAT).status_code == 202  # the key is now cached
    api_keys_revoke(keys=ApiKey.objects.all())
    assert post(SEED_FLAT).status_code == 401


def test_revocation_elsewhere_takes_effect_within_the_cache_time(post, settings):
    from datetime import UTC, datetime, timedelta

    import time_machine

    from ingest.models import ApiKey

    settings.INGEST_KEY_CACHE_SECONDS = 5
    start = datetime.now(UTC)
    with time_machine.travel(start, tick=False):
        assert post(SEED_FLAT).status_code == 202
    ApiKey.objects.update(revoked_at=start)  # another process revoked it
    with time_machine.travel(start + timedelta(seconds=4), tick=False):
        assert post(SEED_FLAT).status_code == 202  # still cached here
    with time_machine.travel(start + timedelta(seconds=6), tick=False):
        assert post(SEED_FLAT).status_code == 401


def test_other_paths_still_go_to_django():
    resp = asgi_request("GET", "/healthz", headers={})
    assert resp.status_code in (200, 503) and "checks" in resp.json()


@pytest.mark.parametrize("front", ["django", "lean"])
def test_database_down_while_checking_a_key_is_503_with_retry_after_then_recovers(
    front, client, api_key, monkeypatch
):
    """The key is not in the cache and the database cannot be reached: 503 + Retry-After naming the
    Authorization step (never a 500); once the database is back the same key is accepted."""
    from django.db import connection

    from ingest.keys import key_cache

    def send():
        headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        body = json.dumps(SEED_FLAT).encode()
        if front == "lean":
            return asgi_request("POST", "/api/ingest", headers=headers, content=body)
        return client.post(
            "/api/ingest", body, content_type="application/json", HTTP_AUTHORIZATION=headers["Authorization"]
        )

    key_cache.clear()
    connection.close()
    with monkeypatch.context() as down:  # every thread's connection shares this settings dict
        if connection.vendor == "sqlite":
            down.setitem(connection.settings_dict, "NAME", "/nonexistent-dir/iops.sqlite3")
        else:
            down.setitem(connection.settings_dict, "PORT", "1")
        resp = send()
        connection.close()
    assert resp.status_code == 503, resp.json()
    assert resp["Retry-After"] == "2"
    assert resp.json()["errors"][0]["field"] == "Authorization"
    resp = send()
    assert resp.status_code == 202 and resp.json()["accepted"] == 1
