"""/api/* answers in the API's JSON shape: 401 without a credential, 404 for unknown ids and paths,
never Django's HTML page or a login redirect; the OpenAPI document is readable with a read key."""

from __future__ import annotations

import pytest

from ingest.keys import api_key_create

pytestmark = pytest.mark.django_db


def _json_error(resp, status: int) -> dict:
    assert resp.status_code == status, resp.content[:200]
    assert resp["Content-Type"].startswith("application/json")
    assert "Location" not in resp
    body = resp.json()
    assert set(body) == {"error", "errors"} and body["errors"][0]["field"]
    return body


@pytest.mark.parametrize(
    "path",
    ["/api/alerts", "/api/kpis", "/api/openapi.json", "/api/docs", "/api/nope", "/api/alerts/1/history"],
)
def test_unauthenticated_requests_get_a_json_401(client, path):
    assert _json_error(client.get(path), 401)["errors"][0]["field"] == "Authorization"


def test_a_non_staff_session_gets_a_json_401_not_a_login_page(client, outsider):
    client.force_login(outsider)
    _json_error(client.get("/api/openapi.json"), 401)
    _json_error(client.get("/api/alerts"), 401)


@pytest.mark.parametrize("path", ["/api/nope", "/api/alerts/999999/history", "/api/entities/student/zz"])
def test_unknown_paths_and_ids_are_a_json_404(client, api_key, path):
    _json_error(client.get(path, HTTP_X_API_KEY=api_key), 404)


def test_unknown_path_written_to_is_a_json_404(client, api_key):
    _json_error(client.post("/api/nope", HTTP_AUTHORIZATION=f"Bearer {api_key}"), 404)
    _json_error(client.post("/api/alerts/999999/acknowledge", HTTP_X_API_KEY=api_key), 404)


def test_openapi_document_and_docs_readable_with_a_read_key(client):
    key = api_key_create(name="reader", scopes=["read"]).plaintext
    doc = client.get("/api/openapi.json", HTTP_X_API_KEY=key)
    assert doc.status_code == 200 and "/api/alerts" in doc.json()["paths"]
    assert client.get("/api/openapi.json", HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 200
    assert client.get("/api/docs", HTTP_X_API_KEY=key).status_code == 200


def test_openapi_document_refuses_a_key_without_read_and_an_unknown_key(client):
    ingest_only = api_key_create(name="ingester", scopes=["ingest"]).plaintext
    body = _json_error(client.get("/api/openapi.json", HTTP_X_API_KEY=ingest_only), 403)
    assert "read scope" in body["errors"][0]["message"]
    _json_error(client.get("/api/openapi.json", HTTP_X_API_KEY="iops_abcd_nonsense"), 401)


def test_issue_19_operations_and_filters_are_in_the_document(client):
    key = api_key_create(name="reader", scopes=["read"]).plaintext
    paths = client.get("/api/openapi.json", HTTP_X_API_KEY=key).json()["paths"]
    for path in (
        "/api/alerts/{alert_id}",
        "/api/export/alerts.csv",
        "/api/export/students.csv",
        "/api/export/tutors.csv",
        "/api/export/history.csv",
        "/api/embed-link",
    ):
        assert "get" in paths[path], path
    assert "text/csv" in paths["/api/export/alerts.csv"]["get"]["responses"]["200"]["content"]
    for path in (
        "/api/alerts",
        "/api/entities/student",
        "/api/entities/tutor",
        "/api/entities/subject_region",
    ):
        assert "q" in {p["name"] for p in paths[path]["get"]["parameters"]}, path
