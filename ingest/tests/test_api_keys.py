"""API key scopes (issue 21, finding 5): `ingest`, `read`, `act`; a new key may only ingest unless given
more (`create_api_key --scopes`, the admin); keys that existed before scopes keep ingest and read; a
key is refused (403 naming the scope) what it was not granted; an anonymous alert action is a 401, not
a CSRF 403."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command

from conftest import event
from ingest.models import ApiKey

pytestmark = pytest.mark.django_db


@pytest.fixture
def alert(db):
    from django.utils import timezone

    from alerts.models import Alert

    now = timezone.now()
    return Alert.objects.create(
        fingerprint="low_health_score:student:stu_k",
        type="low_health_score",
        severity="warning",
        entity_type="student",
        entity_id="stu_k",
        message="Student stu_k health 40",
        first_seen=now,
        last_seen=now,
    )


def _created(*args: str) -> str:
    from io import StringIO

    out = StringIO()
    call_command("create_api_key", *args, stdout=out)
    return out.getvalue().strip()


def _can(client, key: str, alert) -> dict[str, int]:
    auth = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    body = json.dumps(event("ib_call_logged", student_id="stu_k"))
    return {
        "ingest": client.post("/api/ingest", body, content_type="application/json", **auth).status_code,
        "read": client.get("/api/alerts", **auth).status_code,
        "act": client.post(f"/api/alerts/{alert.pk}/acknowledge", **auth).status_code,
    }


def test_create_api_key_prints_a_key_that_can_ingest_and_nothing_else(client, alert):
    key = _created("scripts")
    assert _can(client, key, alert) == {"ingest": 202, "read": 403, "act": 403}
    assert ApiKey.objects.get().scopes == ["ingest"]


def test_create_api_key_scopes_option_grants_exactly_those(client, alert):
    key = _created("ops-bot", "--scopes", "read,act")
    assert _can(client, key, alert) == {"ingest": 403, "read": 200, "act": 200}


def test_create_api_key_refuses_an_unknown_scope():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="scopes must be"):
        _created("x", "--scopes", "ingest,admin")
    assert not ApiKey.objects.exists()


def test_a_refusal_names_the_missing_scope(client, alert):
    key = _created("scripts")
    resp = client.get("/api/alerts", HTTP_X_API_KEY=key)
    assert resp.status_code == 403
    assert resp.json()["errors"] == [
        {"field": "Authorization", "message": "this API key lacks the read scope (admin → API keys)"}
    ]


def test_anonymous_alert_action_is_401_not_a_csrf_403(alert):
    from django.test import Client

    resp = Client(enforce_csrf_checks=True).post(f"/api/alerts/{alert.pk}/acknowledge")
    assert resp.status_code == 401 and resp.json()["errors"][0]["field"] == "Authorization"


def test_staff_session_without_csrf_token_is_still_refused(alert, staff_user):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    assert client.post(f"/api/alerts/{alert.pk}/acknowledge").status_code == 403


def test_admin_creates_a_key_with_chosen_scopes_and_changes_them(admin_client, client, alert):
    page = admin_client.get("/admin/ingest/apikey/add/")
    assert page.status_code == 200 and 'name="scopes"' in page.content.decode()
    resp = admin_client.post("/admin/ingest/apikey/add/", {"name": "reader", "scopes": ["read"]}, follow=True)
    shown = next(str(m) for m in resp.context["messages"] if "shown once" in str(m))
    key = shown.rsplit(" ", 1)[1]
    assert _can(client, key, alert)["read"] == 200 and _can(client, key, alert)["ingest"] == 403
    row = ApiKey.objects.get(name="reader")
    admin_client.post(
        f"/admin/ingest/apikey/{row.pk}/change/", {"name": "reader", "scopes": ["ingest", "read"]}
    )
    assert ApiKey.objects.get(pk=row.pk).scopes == ["ingest", "read"]
    assert _can(client, key, alert)["ingest"] == 202  # at once in this process (the cache is cleared)


@pytest.mark.django_db(transaction=True)
def test_keys_that_existed_before_scopes_keep_ingest_and_read():
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before, after = [("ingest", "0006_suspect_delivery")], [("ingest", "0007_apikey_scopes")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old = executor.loader.project_state(before).apps.get_model("ingest", "ApiKey")
    old.objects.create(name="legacy", prefix="abcd1234", key_hash="0" * 64)
    executor = MigrationExecutor(connection)
    executor.migrate(after)
    assert ApiKey.objects.get(name="legacy").scopes == ["ingest", "read"]
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())  # the rest of the project, as the suite expects
