"""/ws/dashboard/: who may connect, and that a processed event reaches the socket as a KPI update."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.utils import timezone

from iops.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True)]


def _headers(cookie: str | None = None, origin: str = "http://127.0.0.1:8000"):
    headers = [(b"origin", origin.encode()), (b"host", b"127.0.0.1:8000")]
    if cookie:
        headers.append((b"cookie", cookie.encode()))
    return headers


@database_sync_to_async
def _session_cookie(staff: bool) -> str:
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user(f"u{staff}", password="pw-123456789", is_staff=staff)
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


async def test_anonymous_socket_is_refused():
    comm = WebsocketCommunicator(application, "/ws/dashboard/", headers=_headers())
    connected, _ = await comm.connect()
    assert not connected
    await comm.disconnect()


async def test_non_staff_socket_is_refused():
    comm = WebsocketCommunicator(
        application, "/ws/dashboard/", headers=_headers(await _session_cookie(False))
    )
    connected, _ = await comm.connect()
    assert not connected
    await comm.disconnect()


async def test_cross_origin_socket_is_refused():
    cookie = await _session_cookie(True)
    comm = WebsocketCommunicator(
        application, "/ws/dashboard/", headers=_headers(cookie, origin="http://evil.example")
    )
    connected, _ = await comm.connect()
    assert not connected
    await comm.disconnect()


@database_sync_to_async
def _process(events):
    from ingest.pipeline import process_batch

    return process_batch(events, now=timezone.now())


async def test_staff_socket_gets_state_then_a_kpi_update_after_processing(settings):
    settings.DASHBOARD_PUSH_INTERVAL_MS = 50
    comm = WebsocketCommunicator(
        application, "/ws/dashboard/?range=1h", headers=_headers(await _session_cookie(True))
    )
    connected, _ = await comm.connect()
    assert connected
    first = await comm.receive_from(timeout=5)
    assert 'data-kpi="events_per_min"' in first and 'id="alert-feed"' in first
    now = timezone.now().isoformat()
    await _process(
        [
            {
                "event_id": "ws-1",
                "event_type": "customer_health_update",
                "timestamp": now,
                "received_at": now,
                "payload": {"student_id": "stu_ws", "health_score": 30.0},
            }
        ]
    )
    update = await comm.receive_from(timeout=5)
    assert 'data-kpi="open_alerts">1<' in update
    assert 'data-severity="critical"' in update and 'hx-swap-oob="afterbegin:#alert-feed"' in update
    assert await comm.receive_nothing(timeout=0.3)  # coalesced: one update for the batch
    await comm.disconnect()
