"""A batch added to the hour buckets (student, tutor) and the global minute series (one shard's rows):
counted in memory (a list per row, in column order), then one additive upsert per table."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

from iops.lib.sql import upsert_add
from metrics.models import GLOBAL_MINUTE_SHARDS, GlobalMinute, StudentHourly, TutorHourly
from metrics.services.columns import MINUTE_VALUES, SESSION_COUNTS, SESSION_VALUES, STUDENT_VALUES
from metrics.services.sessions import Delta
from metrics.vocabulary import IB_REASONS
from metrics.windows import floor_hour, floor_minute

_REASON_COLUMNS = {r: f"ib_{r}" for r in IB_REASONS}

# Counts are lists in their table's column order (STUDENT_VALUES, SESSION_VALUES, MINUTE_VALUES): a
# bucket is a copy of a list of zeros, a value an index (dicts by column name cost a dict per bucket).
_STUDENT = {c: i for i, c in enumerate(STUDENT_VALUES)}
_SESSION = {c: i for i, c in enumerate(SESSION_VALUES)}
_MINUTE = {c: i for i, c in enumerate(MINUTE_VALUES)}
_SESSION_TO_MINUTE = [(c, _MINUTE[c]) for c in SESSION_COUNTS]
assert STUDENT_VALUES[: len(SESSION_VALUES)] == SESSION_VALUES  # a session value has one index in both
_RECEIVED, _EVENTS, _IB_CALLS = _MINUTE["received"], _MINUTE["events"], _MINUTE["ib_calls"]
_HEALTH_SUM, _HEALTH_COUNT = _STUDENT["health_sum"], _STUDENT["health_count"]
_IB = _STUDENT["ib_calls"]
_IB_UNRESOLVED, _IB_HIGH = _STUDENT["ib_unresolved"], _STUDENT["ib_high_priority"]
_REASON_INDEX = {r: _STUDENT[c] for r, c in _REASON_COLUMNS.items()}


class _Floors:
    """(minute, hour) of a time, as floor_minute and floor_hour give them. A UTC time (what normalised
    events and the database give) is looked up by its epoch minute: datetime.replace costs more than
    the rest of a bucket's update."""

    def __init__(self) -> None:
        self._utc: dict[int, tuple[datetime, datetime]] = {}

    def __call__(self, ts: datetime) -> tuple[datetime, datetime]:
        if ts.tzinfo is not UTC:
            return floor_minute(ts), floor_hour(ts)
        m = int(ts.timestamp()) // 60  # whole seconds since the epoch: exact
        found = self._utc.get(m)
        if found is None:
            found = self._utc[m] = (floor_minute(ts), floor_hour(ts))
        return found


def minute_shard() -> int:
    """The shard of the global minute series a batch adds to. Random per batch: every batch of a live
    stream writes the current minute and holds its row locks until commit, so with one row a minute
    concurrent workers would take turns; two concurrent batches now share a row once in
    GLOBAL_MINUTE_SHARDS, and never for long (a fixed shard per worker would share one for good)."""
    return random.randrange(GLOBAL_MINUTE_SHARDS)  # noqa: S311 - spreading writes, not a secret


class _Buckets:
    """Counts per (student, hour), (tutor, hour) and minute, each row a list of its table's values."""

    def __init__(self) -> None:
        self.student: dict[tuple[str, datetime], list[int]] = {}
        self.tutor: dict[tuple[str, datetime], list[int]] = {}
        self.minute: dict[datetime, list[int]] = {}
        self.floors = _Floors()
        self._received: dict[str, datetime] = {}

    def _student(self, key: tuple[str, datetime]) -> list[int]:
        row = self.student.get(key)
        if row is None:
            row = self.student[key] = [0] * len(STUDENT_VALUES)
        return row

    def _minute(self, minute: datetime) -> list[int]:
        row = self.minute.get(minute)
        if row is None:
            row = self.minute[minute] = [0] * len(MINUTE_VALUES)
        return row

    def add_session(self, d: Delta) -> None:
        minute_at, hour = self.floors(d.ts)
        student = self._student((d.student_id, hour))
        tutor = self.tutor.get(key := (d.tutor_id, hour))
        if tutor is None:
            tutor = self.tutor[key] = [0] * len(SESSION_VALUES)
        values = d.values
        for column, value in values.items():
            i = _SESSION[column]
            student[i] += value
            tutor[i] += value
        minute = self._minute(minute_at)
        for column, i in _SESSION_TO_MINUTE:
            minute[i] += values.get(column, 0)

    def add_event(self, e: dict[str, Any]) -> None:
        received = self._received.get(e["received_at"])
        if received is None:  # a batch's events share a few arrival times
            received = self._received[e["received_at"]] = floor_minute(
                datetime.fromisoformat(e["received_at"])
            )
        self._minute(received)[_RECEIVED] += 1
        minute_at, hour = self.floors(datetime.fromisoformat(e["timestamp"]))
        minute = self._minute(minute_at)
        minute[_EVENTS] += 1
        if e["event_type"] == "customer_health_update":
            self._add_health(e["payload"], hour)
        elif e["event_type"] == "ib_call_logged":
            minute[_IB_CALLS] += 1
            self._add_ib_call(e["payload"], hour)

    def _add_health(self, p: dict[str, Any], hour: datetime) -> None:
        score = p.get("health_score")
        if score is None:
            return
        row = self._student((p["student_id"], hour))
        row[_HEALTH_SUM] += round(float(score) * 100)  # hundredths: exact, order-free sums
        row[_HEALTH_COUNT] += 1

    def _add_ib_call(self, p: dict[str, Any], hour: datetime) -> None:
        row = self._student((p["student_id"], hour))
        row[_IB] += 1
        if p.get("resolved") == False:  # noqa: E712 - None means "not reported"
            row[_IB_UNRESOLVED] += 1
        if p.get("priority") == "high":
            row[_IB_HIGH] += 1
        index = _REASON_INDEX.get(p.get("reason", "other"))
        if index is not None:
            row[index] += 1

    def write(self) -> None:
        # Sorted rows: concurrent workers lock bucket rows in the same order.
        for model, keys, values, rows in (
            (StudentHourly, ["student_id", "hour"], STUDENT_VALUES, self.student),
            (TutorHourly, ["tutor_id", "hour"], SESSION_VALUES, self.tutor),
        ):
            upsert_add(
                table=model._meta.db_table,
                keys=keys,
                values=values,
                rows=[(*k, *v) for k, v in sorted(rows.items())],
            )
        shard = minute_shard()
        upsert_add(
            table=GlobalMinute._meta.db_table,
            keys=["minute", "shard"],
            values=MINUTE_VALUES,
            rows=[(k, shard, *v) for k, v in sorted(self.minute.items())],
        )


def fold_buckets(deltas: list[Delta], events: list[dict[str, Any]]) -> None:
    """Add the batch to the hour buckets (student, tutor) and the global minute series, one upsert each."""
    buckets = _Buckets()
    for d in deltas:
        buckets.add_session(d)
    for e in events:
        buckets.add_event(e)
    buckets.write()
