"""Batches landing in the same minute add to different rows of the global minute series (a shard each):
the KPIs, the API and the charts show the minute's sum, not one of its rows."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from conftest import event
from metrics.models import GlobalMinute
from metrics.services import buckets

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 3, 20, 12, 0, 30, tzinfo=UTC)
MINUTE = NOW.replace(second=0)


def island(html: str, name: str) -> dict:
    found = re.search(rf'<script id="{name}" type="application/json">(.*?)</script>', html, re.S)
    assert found, name
    return json.loads(found.group(1))


def fold_in_shard(monkeypatch, post, drain, shard: int, events: list[dict]) -> None:
    monkeypatch.setattr(buckets, "minute_shard", lambda: shard)
    assert post({"events": events}).status_code == 202
    drain()


@time_machine.travel(NOW, tick=False)
def test_two_batches_in_one_minute_in_different_shards_are_summed(
    monkeypatch, post, drain, staff_client, api_key
):
    ts = (MINUTE + timedelta(seconds=5)).isoformat()
    first = [
        event("session_started", session_id=f"a{i}", student_id=f"stu_a{i}", tutor_id="tut_1", timestamp=ts)
        for i in range(3)
    ]
    second = [
        *(
            event(
                "session_started", session_id=f"b{i}", student_id=f"stu_b{i}", tutor_id="tut_2", timestamp=ts
            )
            for i in range(2)
        ),
        *(event("ib_call_logged", student_id=f"stu_b{i}", timestamp=ts) for i in range(4)),
    ]
    fold_in_shard(monkeypatch, post, drain, 1, first)
    fold_in_shard(monkeypatch, post, drain, 5, second)
    rows = GlobalMinute.objects.filter(minute=MINUTE)
    assert sorted(rows.values_list("shard", "events")) == [(1, 3), (5, 6)]  # one row per shard

    kpis = staff_client.get("/api/kpis?range=1h", HTTP_AUTHORIZATION=f"Bearer {api_key}").json()
    assert (kpis["events_in_range"], kpis["sessions_started"], kpis["ib_calls"]) == (9, 5, 4)

    html = staff_client.get("/?range=1h").content.decode()
    assert 'data-kpi="events_in_range">9<' in html
    events = island(html, "chart-events")["datasets"][0]["data"]  # per minute, by arrival
    assert events[-1] == 9 and sum(events) == 9
    started = island(html, "chart-sessions")["datasets"][0]["data"]  # per minute at 1h
    assert started[-1] == 5 and sum(started) == 5
    html = staff_client.get("/?range=24h").content.decode()  # per hour: summed in the bucket too
    assert sum(island(html, "chart-sessions")["datasets"][0]["data"]) == 5
