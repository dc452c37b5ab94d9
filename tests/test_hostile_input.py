"""Hostile input on every read surface (issue 21, finding 4): NUL bytes, lone surrogates, extreme
timestamps, non-finite and huge numbers in every query and path parameter of the API (taken from the
OpenAPI document, so a new parameter is covered the day it is added), in the alert actions' body, in
the dashboard's pages and in every admin list filter; tampered list cursors; and the database going
away under the read API and /metrics. Whatever comes in: never a 5xx (but 503 with Retry-After while
the database is down), and every 4xx is the API's JSON error naming a field."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import pytest
from django.contrib import admin
from django.test import Client

from tests.test_fuzz_openapi import DOCUMENT, NOW

pytestmark = pytest.mark.django_db

HOSTILE = [
    "\x00",
    "a\x00b",
    "\udfff",
    "a\ud800b",
    "1e400",
    "-1e400",
    "nan",
    "inf",
    "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00+00:01",
    "99999999999999999999999999",
    "-9223372036854775809",
]


def q(value: str) -> str:
    """Percent-encoded as a client sends it (a lone surrogate as its WTF-8 bytes, %ED%BF%BF)."""
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


def assert_no_server_error(resp, what: str) -> None:
    """Below 500; a JSON 4xx is the API's error shape, naming a field (HTML pages may answer HTML 404s)."""
    assert resp.status_code < 500, (what, resp.status_code, resp.content[:300])
    if resp.status_code >= 400 and resp["Content-Type"].startswith("application/json"):
        body = resp.json()
        assert body["error"] and isinstance(body["errors"], list), (what, body)
        assert all(e["field"] and e["message"] for e in body["errors"]), (what, body)


@pytest.fixture
def seeded(db):
    from alerts.models import Alert
    from metrics.models import StudentSnapshot, TutorSnapshot

    StudentSnapshot.objects.create(student_id="stu_1", as_of=NOW, updated_at=NOW, health_score=40)
    StudentSnapshot.objects.create(student_id="stu_2", as_of=NOW, updated_at=NOW, health_score=50)
    TutorSnapshot.objects.create(tutor_id="tut_1", as_of=NOW, updated_at=NOW, avg_rating=4.5)
    return Alert.objects.create(
        fingerprint="low_health_score:student:stu_1",
        type="low_health_score",
        severity="warning",
        entity_type="student",
        entity_id="stu_1",
        message="Student stu_1 health 40",
        first_seen=NOW,
        last_seen=NOW,
    )


def _operations():
    for path, operations in DOCUMENT["paths"].items():
        if path == "/api/ingest":  # fuzzed field by field in ingest/tests/test_fuzz.py
            continue
        for method, operation in operations.items():
            params = operation.get("parameters", [])
            yield (
                path,
                method,
                [p["name"] for p in params if p["in"] == "query"],
                [p["name"] for p in params if p["in"] == "path"],
            )


OPERATIONS = list(_operations())


@pytest.mark.parametrize(("path", "method", "query", "path_params"), OPERATIONS, ids=lambda v: str(v))
def test_every_api_parameter_survives_hostile_values(
    client, api_key, seeded, path, method, query, path_params
):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {api_key}"}
    base = path
    for name in path_params:
        base = base.replace("{" + name + "}", str(seeded.pk) if name == "alert_id" else "stu_1")
    for value in HOSTILE:
        for name in path_params:  # each path parameter, hostile
            url = path.replace("{" + name + "}", q(value))
            for other in path_params:
                url = url.replace("{" + other + "}", "stu_1")
            body = (
                {"data": b'{"reason": "r"}', "content_type": "application/json"} if method == "post" else {}
            )
            resp = getattr(client, method)(url, **body, **auth)
            assert_no_server_error(resp, f"{method} {url}")
        for name in query:  # each query parameter, hostile
            url = f"{base}?{name}={q(value)}"
            resp = getattr(client, method)(url, **auth)
            assert_no_server_error(resp, f"{method} {url}")
        if method == "post" and base.endswith("/dismiss"):  # the one body field of the read/act API
            raw = json.dumps({"reason": value}).encode()
            resp = client.post(base, data=raw, content_type="application/json", **auth)
            assert_no_server_error(resp, f"POST {base} reason={value!r}")


def _cursor(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


@pytest.mark.parametrize(
    ("order", "cursor"),
    [
        ("health_score", [{"a": 1}, 1]),
        ("health_score", [[1], 1]),
        ("health_score", ["x", 1]),
        ("student_id", ["a\x00b", 1]),
        ("student_id", ["a\udfffb", 1]),
        ("-updated_at", ["9999-12-31T23:59:59-23:59", 1]),
        ("-updated_at", ["2026-01-01T00:00:00", 1]),
        ("-updated_at", [17, 1]),
        ("health_score", [40, 10**30]),
        ("health_score", [40, True]),
        ("health_score", [40, -1, 3]),
    ],
    ids=str,
)
def test_a_tampered_cursor_is_400_naming_the_cursor(client, api_key, seeded, order, cursor):
    raw = _cursor(cursor)
    resp = client.get(
        f"/api/entities/student?order={order}&cursor={raw}", HTTP_AUTHORIZATION=f"Bearer {api_key}"
    )
    assert resp.status_code == 400, resp.content[:300]
    assert resp.json()["errors"][0]["field"] == "cursor"


def test_a_cursor_the_list_gave_out_still_works(client, api_key, seeded):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {api_key}"}
    for order in ("health_score", "-updated_at", "student_id"):
        first = client.get(f"/api/entities/student?order={order}&limit=1", **auth).json()
        rest = client.get(f"/api/entities/student?order={order}&limit=1&cursor={first['next']}", **auth)
        assert rest.status_code == 200 and len(rest.json()["results"]) == 1, order


PAGES = [
    "/?range={v}",
    "/?severity={v}&status={v}",
    "/search?q={v}",
    "/entities/student/{v}",
    "/entities/tutor/{v}",
    "/entities/subject_region/{v}",
    "/entities/{v}/stu_1",
]


@pytest.mark.parametrize("page", PAGES)
def test_dashboard_pages_survive_hostile_values(client, staff_user, seeded, page):
    client.force_login(staff_user)
    for value in HOSTILE:
        url = page.format(v=q(value))
        assert_no_server_error(client.get(url), url)


def _admin_filter_urls() -> list[str]:
    """Every admin list, with each of its list filters (exact and range lookups), search and ordering."""
    urls = []
    for model, model_admin in admin.site._registry.items():
        url = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        params = ["q", "o"]
        for entry in model_admin.list_filter:
            name = entry if isinstance(entry, str) else entry[0] if isinstance(entry, tuple) else None
            if name:
                params += [f"{name}__exact", f"{name}__gte"]
        urls += [f"{url}?{name}={{v}}" for name in params]
    return urls


ADMIN_HOSTILE = ["a\x00b", "9999-12-31T23:59:59-23:59", "99999999999999999999999999", "1e400"]


@pytest.mark.django_db(transaction=True)  # a refused read must not poison a test-wide transaction
def test_admin_lists_and_filters_survive_hostile_values(admin_client, seeded):
    urls = _admin_filter_urls()
    assert len(urls) > 60  # every registered list was found
    for url in urls:
        for value in ADMIN_HOSTILE:
            full = url.format(v=q(value))
            assert_no_server_error(admin_client.get(full), full)


@pytest.mark.django_db(transaction=True)  # the database connection is closed and reopened
@pytest.mark.parametrize(
    "path", ["/api/alerts", "/api/entities/student", "/api/kpis", "/api/insights", "/metrics"]
)
def test_database_down_read_api_and_metrics_answer_json_503_with_retry_after(
    path, api_key, settings, monkeypatch
):
    """As ingest does: the client is told to come back (Retry-After), not handed an HTML 500."""
    from django.db import connection

    settings.METRICS_TOKEN = "scrape-token"
    token = "scrape-token" if path == "/metrics" else api_key
    client = Client(raise_request_exception=False)  # as a server answers: the exception is not re-raised
    connection.close()
    with monkeypatch.context() as down:
        if connection.vendor == "sqlite":
            down.setitem(connection.settings_dict, "NAME", "/nonexistent-dir/iops.sqlite3")
        else:
            down.setitem(connection.settings_dict, "PORT", "1")
        from ingest.keys import key_cache

        key_cache.clear()
        resp = client.get(path, HTTP_AUTHORIZATION=f"Bearer {token}")
        connection.close()
    assert resp.status_code == 503, resp.content[:300]
    assert resp["Content-Type"] == "application/json" and resp["Retry-After"]
    assert resp.json()["errors"][0]["field"] == "database"
    assert client.get(path, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
