"""Bulk statements store what they are given, whichever way the rows travel to PostgreSQL."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from insights.models import Insight
from iops.lib.sql import create_objects, insert_ignore, update_rows, upsert
from metrics.models import SupplyDemandReading

pytestmark = pytest.mark.django_db

_COLUMNS = [
    "event_id",
    "subject",
    "region",
    "reported_at",
    "demand_score",
    "available_tutors",
    "balance_status",
    "fold_status",
]
_AT = datetime(2026, 12, 4, 10, 30, 15, 123456, tzinfo=UTC)


def _stored() -> dict[str, tuple]:
    fields = ("reported_at", "demand_score", "available_tutors", "subject")
    return {r.event_id: tuple(getattr(r, f) for f in fields) for r in SupplyDemandReading.objects.all()}


def test_upsert_round_trips_plain_rows_and_updates_on_conflict():
    rows = [("e1", "Maths", "EU", _AT, 1.25, 3, "", ""), ("e2", 'Ma\'ths "é"', "US", _AT, None, None, "", "")]
    insert_ignore(table="metrics_supplydemandreading", columns=_COLUMNS, rows=rows, conflict=["event_id"])
    again = [("e1", "Maths", "EU", _AT, 2.5, 4, "", "")]
    cols = ["demand_score", "available_tutors"]
    upsert(
        table="metrics_supplydemandreading", columns=_COLUMNS, rows=again, conflict=["event_id"], update=cols
    )
    assert _stored() == {"e1": (_AT, 2.5, 4, "Maths"), "e2": (_AT, None, None, 'Ma\'ths "é"')}


def test_upsert_keeps_values_json_cannot_carry():
    rows = [("e1", "Maths", "EU", _AT, math.inf, 3, "", ""), ("e2", "Maths", "EU", _AT, 2.0, 7.0, "", "")]
    insert_ignore(table="metrics_supplydemandreading", columns=_COLUMNS, rows=rows, conflict=["event_id"])
    stored = _stored()
    assert stored["e1"][1] == math.inf and stored["e2"][2] == 7


def test_update_rows_writes_fields_of_many_instances():
    rows = [(f"e{i}", "Maths", "EU", _AT, float(i), i, "", "") for i in range(3)]
    insert_ignore(table="metrics_supplydemandreading", columns=_COLUMNS, rows=rows, conflict=["event_id"])
    objs = list(SupplyDemandReading.objects.order_by("event_id"))
    for o in objs:
        o.fold_ratio, o.fold_status, o.fold_since = 0.5, "balanced", _AT
    update_rows(
        model=SupplyDemandReading,
        key="event_id",
        fields=["fold_ratio", "fold_status", "fold_since"],
        objs=objs,
    )
    got = set(SupplyDemandReading.objects.values_list("fold_ratio", "fold_status", "fold_since"))
    assert got == {(0.5, "balanced", _AT)}


def test_create_objects_stores_instances_as_bulk_create_would_and_sets_their_keys():
    """JSON fields (nested, unicode, quotes), nulls and datetimes round-trip; each instance gets its own
    primary key, in order."""
    made = [
        Insight(
            entity_type="student",
            entity_id=f"stu_{i}",
            alert_id=None if i else 7,
            risk=0.25 * i,
            level="high",
            explanation=f'risk "{i}" — é',
            recommendations=[f"call {i}", "wait"],
            drivers=[{"feature": "platform", "value": 1.5, "contribution": i, "why": 'it\'s "low"'}],
            features={"health": None if i else 40.5, "nested": {"k": [1, 2.5, None]}},
            model="local:health-v2",
            scored_at=_AT,
        )
        for i in range(3)
    ]
    assert create_objects(model=Insight, objs=made) == made
    assert all(o.pk is not None for o in made) and len({o.pk for o in made}) == 3
    for obj in made:
        stored = Insight.objects.get(pk=obj.pk)
        assert (stored.entity_id, stored.alert_id, stored.risk, stored.explanation, stored.scored_at) == (
            obj.entity_id,
            obj.alert_id,
            obj.risk,
            obj.explanation,
            _AT,
        )
        assert (stored.recommendations, stored.drivers, stored.features) == (
            obj.recommendations,
            obj.drivers,
            obj.features,
        )
    assert create_objects(model=Insight, objs=[]) == []


@pytest.mark.postgres
def test_pg_execute_loads_timestamps_as_the_orm_does():
    """pg_execute loads timestamptz with psycopg's own (C) loader: the values, and their time zone,
    are what Django's ORM gives for the same rows."""
    from django.db import connection

    from iops.lib.sql import pg_execute

    if connection.vendor != "postgresql":
        pytest.skip("pg_execute: PostgreSQL")
    moments = [_AT, datetime(2026, 3, 29, 1, 30, tzinfo=UTC), datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC)]
    rows = [(f"e{i}", "Maths", "EU", at, 1.0, 1, "", "") for i, at in enumerate(moments)]
    insert_ignore(table="metrics_supplydemandreading", columns=_COLUMNS, rows=rows, conflict=["event_id"])
    raw = dict(pg_execute("SELECT event_id, reported_at FROM metrics_supplydemandreading", [], fetch=True))
    orm = dict(SupplyDemandReading.objects.values_list("event_id", "reported_at"))
    assert raw == orm == {f"e{i}": at for i, at in enumerate(moments)}
    assert {v.tzinfo for v in raw.values()} == {v.tzinfo for v in orm.values()} == {UTC}
