"""POST /api/ingest in /api/openapi.json: generated from the event models, a valid OpenAPI document,
and the real endpoint's answers match the documented shapes. /api/docs serves only local assets."""

from __future__ import annotations

import re

import jsonschema
import pytest
from openapi_spec_validator import validate

from conftest import event
from ingest.schemas import ALIASES, EVENT_MODELS

pytestmark = pytest.mark.django_db


@pytest.fixture
def document(client, staff_user) -> dict:
    client.force_login(staff_user)
    resp = client.get("/api/openapi.json")
    assert resp.status_code == 200
    client.logout()
    return resp.json()


def _validator(document: dict, schema: dict) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({**schema, "components": document["components"]})


def test_document_is_valid_openapi_and_has_the_ingest_operation(document):
    validate(document)
    op = document["paths"]["/api/ingest"]["post"]
    assert set(op["responses"]) == {"202", "400", "401", "403", "405", "413", "415", "429", "503"}
    assert (
        "Retry-After" in op["responses"]["429"]["headers"]
        and "Retry-After" in op["responses"]["503"]["headers"]
    )
    assert {"BearerKey": []} in op["security"]


def test_every_event_field_and_alias_is_documented(document):
    schemas = document["components"]["schemas"]
    for event_type, model in EVENT_MODELS.items():
        documented = schemas[model.__name__]["properties"]
        assert set(model.model_fields) | set(ALIASES.get(event_type, {})) <= set(documented), event_type
        required = {name for name, f in model.model_fields.items() if f.is_required()}
        assert set(schemas[model.__name__].get("required", [])) == required, event_type


def test_documented_request_schema_agrees_with_the_validator(document, post):
    request = _validator(
        document,
        document["paths"]["/api/ingest"]["post"]["requestBody"]["content"]["application/json"]["schema"],
    )
    good = [
        event(
            "session_completed", student_id="s", tutor_id="t", session_id="x", rating=5, duration_minutes=30
        ),
        {"event_type": "ib_call_logged", "payload": {"student_id": "s", "reason": "other"}},
        {"events": [event("supply_demand_update", subject="Physics", region="west", demand_score=70)]},
    ]
    bad = [
        event("session_completed", student_id="s", tutor_id="t", session_id="x", rating=6),
        {"event_type": "ib_call_logged", "payload": {"reason": "other"}},
        event("customer_health_update", student_id="s", churn_risk="extreme"),
        {"event_type": "nope"},
        {"events": []},
    ]
    for body in good:
        assert request.is_valid(body), body
        assert post(body).status_code == 202, body
    for body in bad:
        assert not request.is_valid(body), body
        assert post(body).status_code == 400, body


def test_real_answers_match_the_documented_responses(document, post, client, settings):
    responses = document["paths"]["/api/ingest"]["post"]["responses"]

    def check(resp):
        schema = responses[str(resp.status_code)]["content"]["application/json"]["schema"]
        _validator(document, schema).validate(resp.json())
        return resp.status_code

    ok = event("ib_call_logged", student_id="s")
    assert check(post(ok)) == 202
    assert check(post({"events": [ok, {"event_type": "x"}]})) == 202
    assert check(post({"events": [{"event_type": "x"}]})) == 400
    assert check(post({"event_type": "ib_call_logged"})) == 400
    assert check(post(None, raw=b"{")) == 400
    assert check(post(ok, key="iops_nope_nope")) == 401
    assert check(client.get("/api/ingest")) == 405
    assert check(post(None, content_type="text/plain", raw=b"x")) == 415
    assert check(post({**ok, "pad": "x" * settings.INGEST_MAX_BODY_BYTES})) == 413
    settings.INGEST_RATE_LIMIT_BURST = 1
    from ingest.keys import key_cache
    from ingest.models import ApiKey

    ApiKey.objects.update(rate_limit_per_sec=0.001)
    key_cache.clear()  # the override takes effect once the cached key expires
    post(ok)  # takes the one token
    assert check(post({"events": [ok, ok]})) == 429
    from ingest.ratelimit import buckets
    from ingest.streams import get_stream

    settings.IOPS_STREAM, settings.REDIS_URL = "redis", "redis://127.0.0.1:1/0"  # nothing listens there
    get_stream.cache_clear()
    buckets.reset()
    assert check(post(ok)) == 503


def test_spec_and_docs_are_staff_only(client, outsider):
    assert client.get("/api/openapi.json").status_code in (302, 401, 403)
    client.force_login(outsider)
    assert client.get("/api/docs").status_code in (302, 401, 403)


def test_docs_page_uses_only_local_assets(client, staff_user):
    client.force_login(staff_user)
    page = client.get("/api/docs")
    assert page.status_code == 200
    html = page.content.decode()
    assert "cdn" not in html.lower() and not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assets = re.findall(r"""(?:src|href)=["']([^"']+\.(?:js|css))["']""", html)
    assert assets, "the page loads swagger-ui from somewhere"
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
