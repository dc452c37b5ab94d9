"""Fixtures for the metrics tests: a simulated month of correlated events, table dumps to compare."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

import pytest

from simulator.population import EventFactory, Population


def simulated_month(*, now: datetime, events: int, seed: int = 7) -> list[dict[str, Any]]:
    """`events` simulator events spread over the 30 days before `now` (minus an hour), plus the awkward
    cases live traffic has: a repeated completion of the same session under another event_id at an
    earlier and at a later time, a session started before it was completed but delivered after,
    events older than the retention horizon, and several supply readings with the same timestamp."""
    pop = Population.build(seed=seed, students=120, tutors=30)
    factory = EventFactory(pop, seed=seed)
    start = now - timedelta(days=30)
    step = (timedelta(days=30) - timedelta(hours=1)) / events
    out = [factory.next_event(start + step * i, progress=i / events) for i in range(events)]
    rng = random.Random(seed)
    completions = [e for e in out if e["event_type"] == "session_completed"]
    for i, e in enumerate(rng.sample(completions, k=min(40, len(completions)))):
        shift = timedelta(minutes=rng.choice([-90, -5, 5, 90]))
        ts = min(datetime.fromisoformat(e["timestamp"]) + shift, now - timedelta(hours=1))
        out.append(
            {
                **e,
                "event_id": f"dup_{i}",
                "timestamp": ts.isoformat(),
                "payload": {**e["payload"], "student_rating": rng.randint(1, 5)},
            }
        )
    students = [s.id for s in pop.students[:5]]
    for i, student in enumerate(students):  # history from before the retention horizon: flagged late
        ts = (now - timedelta(days=50 + i)).isoformat()
        out.append(
            {
                "event_type": "session_completed",
                "event_id": f"old_{i}",
                "timestamp": ts,
                "payload": {
                    "session_id": f"old_sess_{i}",
                    "student_id": student,
                    "tutor_id": pop.tutors[0].id,
                    "subject": "Mathematics",
                    "completed_successfully": i % 2 == 0,
                    "student_rating": 2 + i % 3,
                },
            }
        )
    tie = (now - timedelta(days=2)).isoformat()
    for i, demand in enumerate([80.0, 30.0, 60.0]):
        out.append(
            {
                "event_type": "supply_demand_update",
                "event_id": f"tie_{i}",
                "timestamp": tie,
                "payload": {
                    "subject": "Physics",
                    "region": "west",
                    "demand_score": demand,
                    "supply_score": 40.0,
                },
            }
        )
    return out


def table_dump(model, *, skip_zero: tuple[str, ...] = ()) -> dict[Any, dict[str, Any]]:
    """Every row of a derived table keyed by its natural key, `id` left out. With `skip_zero`, rows
    whose listed counters are all zero are dropped (a moved contribution leaves a zero bucket behind).
    The global minute series by minute, its shards summed: which shard a batch wrote to is chance."""
    if model.__name__ == "GlobalMinute":
        from metrics.services import MINUTE_VALUES

        return {
            (m,): {"minute": m, **dict(zip(MINUTE_VALUES, sums, strict=True))}
            for m, *sums in model.objects.per_minute(*MINUTE_VALUES)
        }
    keys = {
        "Session": ("session_id",),
        "StudentHourly": ("student_id", "hour"),
        "TutorHourly": ("tutor_id", "hour"),
        "StudentSnapshot": ("student_id",),
        "TutorSnapshot": ("tutor_id",),
        "SubjectRegionSnapshot": ("subject", "region"),
        "SupplyDemandReading": ("event_id",),
    }[model.__name__]
    out = {}
    for row in model.objects.values():
        row.pop("id")
        if skip_zero and not any(row[c] for c in skip_zero):
            continue
        out[tuple(row[k] for k in keys)] = row
    return out


@pytest.fixture
def month():
    return simulated_month
