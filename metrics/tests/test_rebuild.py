"""`manage.py rebuild_metrics` recomputes every derived row from stored events and yields exactly what
incremental processing produced, whatever order and batching the events arrived in."""

from __future__ import annotations

import io
import random
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.management import call_command

from ingest.models import Event
from metrics.models import (
    GlobalMinute,
    Session,
    StudentHourly,
    StudentSnapshot,
    SubjectRegionSnapshot,
    SupplyDemandReading,
    TutorHourly,
    TutorSnapshot,
)
from metrics.services import SESSION_VALUES, STUDENT_VALUES, snapshots_refresh_stale
from metrics.tests.conftest import table_dump

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
SNAPSHOTS = (StudentSnapshot, TutorSnapshot, SubjectRegionSnapshot)


def dump_all():
    return {
        "Session": table_dump(Session),
        "StudentHourly": table_dump(StudentHourly, skip_zero=tuple(STUDENT_VALUES)),
        "TutorHourly": table_dump(TutorHourly, skip_zero=tuple(SESSION_VALUES)),
        "GlobalMinute": table_dump(GlobalMinute),
        "SupplyDemandReading": table_dump(SupplyDemandReading),
        **{m.__name__: table_dump(m) for m in SNAPSHOTS},
    }


def post_in_random_batches(post, drain, events, *, seed: int):
    """Shuffle, post in random-size batches received at increasing times in the last hour, then let
    the worker process them (in stream order, its own batch size) with the clock frozen at NOW."""
    rng = random.Random(seed)
    events = list(events)
    rng.shuffle(events)
    received = NOW - timedelta(minutes=59)
    while events:
        size = rng.randint(1, 500)
        batch, events = events[:size], events[size:]
        with time_machine.travel(received, tick=False):
            resp = post({"events": batch})
            assert resp.status_code == 202 and resp.json()["rejected"] == 0, resp.json()
        received += timedelta(seconds=rng.randint(1, 90))
    with time_machine.travel(NOW, tick=False):
        drain()
        snapshots_refresh_stale(now=NOW)  # the 5-minute maintenance job: subject × region own figures


@pytest.mark.parametrize("seed", [1, 2])
def test_rebuild_equals_incremental_processing_of_a_simulated_month(post, drain, month, seed):
    events = month(now=NOW - timedelta(hours=1), events=2500, seed=seed)
    post_in_random_batches(post, drain, events, seed=seed)
    assert Event.objects.count() == len(events)
    assert Event.objects.filter(late=True).count() == 5
    incremental = dump_all()
    assert len(incremental["StudentSnapshot"]) > 50 and len(incremental["SubjectRegionSnapshot"]) > 10
    assert any(s["health_score"] is not None for s in incremental["StudentSnapshot"].values())
    assert any(s["burnout_risk"] for s in incremental["TutorSnapshot"].values())
    assert any(s["own_ratio"] is not None for s in incremental["SubjectRegionSnapshot"].values())

    with time_machine.travel(NOW, tick=False):
        out = io.StringIO()
        call_command("rebuild_metrics", "--batch-size", "300", "--no-progress", stdout=out)
    assert f"rebuilt from {len(events)} events" in out.getvalue()
    rebuilt = dump_all()
    for table, rows in incremental.items():
        assert rebuilt[table].keys() == rows.keys(), table
        for key, row in rows.items():
            assert rebuilt[table][key] == row, (table, key)


def test_arrival_order_does_not_change_the_result(post, drain, month):
    """Two different shuffles of the same month give identical snapshots, before any rebuild."""
    events = month(now=NOW - timedelta(hours=1), events=800, seed=3)
    post_in_random_batches(post, drain, events, seed=10)
    first = {m.__name__: table_dump(m) for m in SNAPSHOTS}
    with time_machine.travel(NOW, tick=False):
        call_command("rebuild_metrics", "--no-progress", stdout=io.StringIO())  # a rebuild is a reset too
    Event.objects.all().delete()
    for model in (Session, StudentHourly, TutorHourly, GlobalMinute, SupplyDemandReading, *SNAPSHOTS):
        model.objects.all().delete()
    post_in_random_batches(post, drain, events, seed=11)
    second = {m.__name__: table_dump(m) for m in SNAPSHOTS}
    assert first == second


@time_machine.travel(NOW, tick=False)
def test_rebuild_shows_progress_with_a_rate_and_is_repeatable(post, drain, month):
    post({"events": month(now=NOW - timedelta(hours=1), events=300, seed=4)[:300]})
    drain()
    err = io.StringIO()
    call_command("rebuild_metrics", stdout=io.StringIO(), stderr=err)
    assert "rebuild_metrics" in err.getvalue() and "ev/s" in err.getvalue()
    once = {m.__name__: table_dump(m) for m in SNAPSHOTS}
    call_command("rebuild_metrics", "--no-progress", stdout=io.StringIO())
    assert {m.__name__: table_dump(m) for m in SNAPSHOTS} == once


def test_rebuild_rejects_a_silly_batch_size(db):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        call_command("rebuild_metrics", "--batch-size", "0")


def test_the_rule_inputs_a_refresh_returns_are_the_snapshots_it_wrote(post, drain, month):
    """The alert rules read what the refresh returns instead of the rows: each value must be the stored one."""
    post_in_random_batches(post, drain, month(now=NOW - timedelta(hours=1), events=800, seed=5), seed=5)
    later = NOW + timedelta(hours=2)
    touched = snapshots_refresh_stale(now=later)
    assert touched.students and touched.tutors
    for model, key, views in (
        (StudentSnapshot, "student_id", touched.student_views),
        (TutorSnapshot, "tutor_id", touched.tutor_views),
    ):
        stored = {getattr(row, key): row for row in model.objects.filter(**{f"{key}__in": views})}
        assert stored.keys() == views.keys()
        for entity_id, view in views.items():
            row = stored[entity_id]
            assert row.as_of == later
            assert vars(view) == {name: getattr(row, name) for name in vars(view)}, (model, entity_id)
