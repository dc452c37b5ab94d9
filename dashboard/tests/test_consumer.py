"""/ws/dashboard/: who may connect, and that a processed event reaches the socket as a KPI update."""

from __future__ import annotations

from datetime import timedelta

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

    user, _ = get_user_model().objects.get_or_create(username=f"u{staff}", defaults={"is_staff": staff})
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
    from pipeline.batch import process_batch

    return process_batch(events, now=timezone.now())


async def test_staff_socket_gets_state_then_a_kpi_update_after_processing(settings):
    settings.DASHBOARD_PUSH_INTERVAL_MS = 50
    await _process([_history("stu_ws")])
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
    # The batch's note is pushed at once (leading edge); the alert's insight, scored after the commit,
    # sends one more note: at most one more update, never one per row or statement.
    extra = []
    while not await comm.receive_nothing(timeout=0.3):
        extra.append(await comm.receive_from(timeout=1))
    assert len(extra) <= 1, extra
    await comm.disconnect()


# --- filters, alert changes and throttling -------------------------------------------------------

import asyncio  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402

from channels.layers import get_channel_layer  # noqa: E402

from dashboard.tests.conftest import make_alert  # noqa: E402
from iops.lib.realtime import DASHBOARD_GROUP  # noqa: E402

ROW_RE = re.compile(r'<li id="alert-(\d+)"')


async def _connect(path: str):
    comm = WebsocketCommunicator(application, path, headers=_headers(await _session_cookie(True)))
    connected, _ = await comm.connect()
    assert connected
    return comm, await comm.receive_from(timeout=5)


async def _note(**change):
    await get_channel_layer().group_send(
        DASHBOARD_GROUP,
        {"type": "dashboard.changed", "events": 0, "alerts_created": [], "alerts_updated": [], **change},
    )


async def test_state_on_connect_respects_the_feed_filters(settings):
    crit = await database_sync_to_async(make_alert)(entity_id="stu_a", severity="critical")
    warn = await database_sync_to_async(make_alert)(entity_id="stu_b", severity="warning")
    comm, state = await _connect("/ws/dashboard/?range=1h&severity=critical")
    assert f'data-alert-id="{crit.pk}"' in state and f'data-alert-id="{warn.pk}"' not in state
    assert 'hx-swap-oob="innerHTML"' in state  # the feed's children are replaced: catch-up after reconnect
    await comm.disconnect()


@database_sync_to_async
def _acknowledge(alert_id: int) -> None:
    from alerts.services import alert_transition

    alert_transition(alert_id=alert_id, action="acknowledge", user=None, now=timezone.now())


async def test_alert_change_puts_a_matching_row_on_top_and_removes_one_that_no_longer_matches(settings):
    settings.DASHBOARD_PUSH_INTERVAL_MS = 50
    alert = await database_sync_to_async(make_alert)(entity_id="stu_c")
    everything, _ = await _connect("/ws/dashboard/")
    open_only, _ = await _connect("/ws/dashboard/?status=open")
    await _acknowledge(alert.pk)
    await _note(alerts_updated=[alert.pk])
    update = await everything.receive_from(timeout=5)
    assert 'hx-swap-oob="afterbegin:#alert-feed"' in update and 'data-status="acknowledged"' in update
    update = await open_only.receive_from(timeout=5)
    assert f'<div id="alert-{alert.pk}" hx-swap-oob="delete">' in update
    assert 'data-status="acknowledged"' not in update
    await everything.disconnect()
    await open_only.disconnect()


async def test_a_flood_of_changed_alerts_sends_the_feeds_first_page_whole(settings):
    """More changed alerts than the feed's first page: the update carries that page (as a reload shows
    it, "show more" included), not a row per changed alert, so its size is bounded by the page."""
    from dashboard.selectors import FEED_LIMIT

    settings.DASHBOARD_PUSH_INTERVAL_MS = 50
    ids = [
        (await database_sync_to_async(make_alert)(entity_id=f"stu_flood_{i}", type="ib_call_spike")).pk
        for i in range(FEED_LIMIT + 10)
    ]
    critical = await database_sync_to_async(make_alert)(entity_id="stu_flood_c", severity="critical")
    comm, _ = await _connect("/ws/dashboard/?range=1h")
    await _note(alerts_created=[*ids, critical.pk])
    update = await comm.receive_from(timeout=5)
    assert 'id="alert-feed"' in update and 'hx-swap-oob="innerHTML"' in update
    assert "afterbegin:#alert-feed" not in update
    rows = {int(i) for i in re.findall(r'data-alert-id="(\d+)"', update)}
    assert critical.pk in rows and len(rows) <= FEED_LIMIT
    assert "Show more alerts" in update
    assert 'data-kpi="open_alerts"' in update  # the KPIs ride along as in any update
    await comm.disconnect()


async def test_a_burst_of_change_notes_is_coalesced_into_few_messages(settings):
    """Flushes start at least an interval apart, the first after the burst began: m messages need
    (m - 1) intervals between the burst's start and the last message's arrival. Arrivals are stamped
    as they come (a collector task), so channel-layer lag only widens the allowance, never breaks it."""
    settings.DASHBOARD_PUSH_INTERVAL_MS = 100
    interval = 0.1
    ids = [(await database_sync_to_async(make_alert)(entity_id=f"stu_burst_{i}")).pk for i in range(20)]
    comm, _ = await _connect("/ws/dashboard/?range=1h")
    arrivals: list[tuple[float, str]] = []

    async def collect():
        while True:
            message = await comm.receive_from(timeout=60)
            arrivals.append((time.monotonic(), message))

    collector = asyncio.ensure_future(collect())
    notes = 300
    started = time.monotonic()
    for n in range(notes):
        await _note(events=1, alerts_created=[ids[n % len(ids)]])
        await asyncio.sleep(0.002)  # spread the burst over about half a second
    seen = -1
    while seen != len(arrivals):  # until no message for four intervals
        seen = len(arrivals)
        await asyncio.sleep(interval * 4)
    collector.cancel()
    messages = [message for _, message in arrivals]
    span = arrivals[-1][0] - started
    bound = math.floor(span / interval + 0.01) + 1
    assert 2 <= len(messages) <= bound, (len(messages), bound, span)
    shown = {int(i) for m in messages for i in ROW_RE.findall(m)}
    assert shown == set(ids)  # coalescing drops no alert
    await comm.disconnect()


async def test_a_note_after_a_quiet_interval_is_pushed_at_once(settings):
    """Leading edge: the first note after a quiet interval does not wait for the interval to pass."""
    settings.DASHBOARD_PUSH_INTERVAL_MS = 3000
    alert = await database_sync_to_async(make_alert)(entity_id="stu_lead")
    comm, _ = await _connect("/ws/dashboard/?range=1h")
    await _note(alerts_created=[alert.pk])
    update = await comm.receive_from(timeout=1.5)  # half the interval
    assert f'<li id="alert-{alert.pk}"' in update
    await comm.disconnect()


# --- entity pages ---------------------------------------------------------------------------------


def _health(event_id: str, student_id: str, score: float, *, days_ago: float = 0) -> dict:
    now = timezone.now()
    return {
        "event_id": event_id,
        "event_type": "customer_health_update",
        "timestamp": (now - timedelta(days=days_ago)).isoformat(),
        "received_at": now.isoformat(),
        "payload": {"student_id": student_id, "health_score": score},
    }


def _history(student_id: str) -> dict:
    """A platform reading of 85 twenty days ago: weeks of history, so the student is scored."""
    return _health(f"hist-{student_id}", student_id, 85.0, days_ago=20)


async def test_entity_socket_refuses_anonymous_cross_origin_and_unknown_entity_types():
    comm = WebsocketCommunicator(application, "/ws/entities/student/stu_x", headers=_headers())
    connected, _ = await comm.connect()
    assert not connected
    comm = WebsocketCommunicator(
        application,
        "/ws/entities/student/stu_x",
        headers=_headers(await _session_cookie(True), origin="http://evil.example"),
    )
    connected, _ = await comm.connect()
    assert not connected
    comm = WebsocketCommunicator(
        application, "/ws/entities/planet/mars", headers=_headers(await _session_cookie(True))
    )
    connected, _ = await comm.connect()
    assert not connected


async def test_entity_page_socket_sends_the_parts_that_changed_and_nothing_for_others(settings):
    """Every part of the page arrives on connect (the catch-up); a batch touching only another student
    sends nothing; a support call of this student resends the figures but not the (unchanged) alerts,
    so a form open in the alert list is left alone; a low health reading then resends the alerts."""
    settings.DASHBOARD_PUSH_INTERVAL_MS = 50
    await _process([_history("stu_page"), _health("ent-1", "stu_page", 90.0)])
    comm, state = await _connect("/ws/entities/student/stu_page")
    for part in ("head", "snapshot", "history-card", "components", "insight", "alerts", "sessions"):
        assert f'id="entity-{part}"' in state, part
    assert state.count('hx-swap-oob="true"') == 7
    assert "<dd>90 / –</dd>" in state and "No alerts for this student" in state
    await _process([_health("ent-2", "stu_other", 20.0)])
    assert await comm.receive_nothing(timeout=0.5)  # a change, but not to this page
    now = timezone.now().isoformat()
    call = {"student_id": "stu_page", "reason": "billing_question", "resolved": False}
    await _process(
        [
            {
                "event_id": "ent-3",
                "event_type": "ib_call_logged",
                "timestamp": now,
                "received_at": now,
                "payload": call,
            }
        ]
    )
    update = await comm.receive_from(timeout=5)
    assert 'id="entity-snapshot"' in update and "<dd>1 / 1 / 1</dd>" in update
    assert 'id="entity-alerts"' not in update and 'id="entity-sessions"' not in update
    await _process([_health("ent-4", "stu_page", 30.0)])
    update = await comm.receive_from(timeout=5)
    assert "<dd>30 / –</dd>" in update and 'id="entity-alerts"' in update
    assert 'data-severity="critical"' in update and "No alerts for this student" not in update
    await comm.disconnect()


async def test_entity_socket_path_is_the_pages_path_with_encoded_ids(settings, client, staff_user):
    """A subject × region id holds "|": the page links its socket with the id percent-encoded, and
    the socket finds the same entity."""
    now = timezone.now().isoformat()
    reading = {"subject": "Physics", "region": "west", "demand_score": 80.0, "supply_score": 40.0}
    await _process(
        [
            {
                "event_id": "ent-sd",
                "event_type": "supply_demand_update",
                "timestamp": now,
                "received_at": now,
                "payload": reading,
            }
        ]
    )
    await database_sync_to_async(client.force_login)(staff_user)
    page = await database_sync_to_async(client.get)("/entities/subject_region/Physics%7Cwest")
    assert 'ws-connect="/ws/entities/subject_region/Physics%7Cwest"' in page.content.decode()
    comm, state = await _connect("/ws/entities/subject_region/Physics%7Cwest")
    assert "<dd>Physics / west</dd>" in state and "<dd>80 / 40</dd>" in state
    await comm.disconnect()
