"""A stored insight reaches open dashboards over /ws/dashboard/: the alert's feed row shows the risk
and an open drawer's insight section is replaced (htmx out-of-band swaps), without a reload."""

from __future__ import annotations

import re

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from dashboard.tests.conftest import make_alert, make_student
from insights.models import Insight
from insights.tasks import score_churn
from iops.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True)]

HEADERS = [(b"origin", b"http://127.0.0.1:8000"), (b"host", b"127.0.0.1:8000")]


@database_sync_to_async
def _staff_cookie() -> str:
    from django.contrib.auth import get_user_model

    user, _ = get_user_model().objects.get_or_create(username="ops-live", defaults={"is_staff": True})
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


async def _connect():
    comm = WebsocketCommunicator(
        application, "/ws/dashboard/", headers=[*HEADERS, (b"cookie", (await _staff_cookie()).encode())]
    )
    connected, _ = await comm.connect()
    assert connected
    return comm, await comm.receive_from(timeout=5)


@database_sync_to_async
def _score(entity_id: str, alert_id: int | None = None) -> Insight:
    return Insight.objects.get(pk=score_churn.apply(args=("student", entity_id, alert_id)).get())


def _row(html: str, alert_id: int) -> str:
    match = re.search(rf'<li id="alert-{alert_id}".*?</li>', html, re.DOTALL)
    return match.group(0) if match else ""


def _drawer_section(html: str, alert_id: int) -> str:
    match = re.search(rf'<section id="panel-insight-{alert_id}"[^>]*>.*?</section>', html, re.DOTALL)
    return match.group(0) if match else ""


async def test_an_alerts_insight_updates_its_row_and_open_drawer(settings):
    settings.DASHBOARD_PUSH_INTERVAL_MS = 50
    await database_sync_to_async(make_student)("stu_live", platform_health_score=30.0, sessions_7d=0)
    alert = await database_sync_to_async(make_alert)(entity_id="stu_live", severity="critical")
    comm, state = await _connect()
    before = _row(state, alert.pk)
    assert before and "churn risk" not in before  # not scored yet
    insight = await _score("stu_live", alert.pk)
    update = await comm.receive_from(timeout=5)
    row = _row(update, alert.pk)
    assert f'data-risk="{insight.risk}"' in row and f"churn risk {insight.risk * 100:.0f}%" in row
    section = _drawer_section(update, alert.pk)
    assert 'hx-swap-oob="outerHTML"' in section
    assert insight.explanation in section and insight.model in section
    assert 'data-chart="panel-drivers"' in section  # the drivers chart comes with it
    await comm.disconnect()


async def test_an_insight_without_an_alert_updates_the_drawers_of_its_entitys_alerts(settings):
    settings.DASHBOARD_PUSH_INTERVAL_MS = 50
    await database_sync_to_async(make_student)("stu_beat", platform_health_score=35.0)
    active = await database_sync_to_async(make_alert)(entity_id="stu_beat")
    resolved = await database_sync_to_async(make_alert)(entity_id="stu_beat", status="resolved")
    other = await database_sync_to_async(make_alert)(entity_id="stu_other")
    comm, _ = await _connect()
    insight = await _score("stu_beat")  # the beat's: no alert
    update = await comm.receive_from(timeout=5)
    assert insight.explanation in _drawer_section(update, active.pk)
    assert not _drawer_section(update, resolved.pk) and not _drawer_section(update, other.pk)
    assert not _row(update, active.pk)  # its row shows only an insight scored for it
    await comm.disconnect()
