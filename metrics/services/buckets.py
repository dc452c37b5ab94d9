"""A batch added to the hour buckets (student, tutor) and the global minute series (one shard's rows):
counted in memory by column name, then one additive upsert per table."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from iops.lib.sql import upsert_add
from metrics.models import GLOBAL_MINUTE_SHARDS, GlobalMinute, StudentHourly, TutorHourly
from metrics.services.columns import MINUTE_VALUES, SESSION_COUNTS, SESSION_VALUES, STUDENT_VALUES
from metrics.services.sessions import Delta
from metrics.vocabulary import IB_REASONS
from metrics.windows import floor_hour, floor_minute

Counts = dict[str, int]

_REASON_COLUMNS = {r: f"ib_{r}" for r in IB_REASONS}

# A bucket's counts: a dict by column, copied from its table's zeros (a copy of a dict of ints is a
# memcpy and, holding no containers, stays untracked by the garbage collector; a list would not).
_STUDENT_ZEROS = dict.fromkeys(STUDENT_VALUES, 0)
_SESSION_ZEROS = dict.fromkeys(SESSION_VALUES, 0)
_MINUTE_ZEROS = dict.fromkeys(MINUTE_VALUES, 0)


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


def _row(rows: dict[Any, Counts], key: Any, zeros: Counts) -> Counts:
    """The counts of `key` in `rows`, a copy of the table's `zeros` the first time."""
    row = rows.get(key)
    if row is None:
        row = rows[key] = zeros.copy()
    return row


def minute_shard() -> int:
    """The shard of the global minute series a batch adds to. Random per batch: every batch of a live
    stream writes the current minute and holds its row locks until commit, so with one row a minute
    concurrent workers would take turns; two concurrent batches now share a row once in
    GLOBAL_MINUTE_SHARDS, and never for long (a fixed shard per worker would share one for good)."""
    return random.randrange(GLOBAL_MINUTE_SHARDS)  # noqa: S311 - spreading writes, not a secret


class _Buckets:
    """Counts per (student, hour), (tutor, hour) and minute, each row a dict of its table's values."""

    def __init__(self) -> None:
        self.student: dict[tuple[str, datetime], Counts] = {}
        self.tutor: dict[tuple[str, datetime], Counts] = {}
        self.minute: dict[datetime, Counts] = {}
        self.floors = _Floors()
        self._received: dict[str, datetime] = {}

    def _student(self, key: tuple[str, datetime]) -> Counts:
        return _row(self.student, key, _STUDENT_ZEROS)

    def _minute(self, minute: datetime) -> Counts:
        return _row(self.minute, minute, _MINUTE_ZEROS)

    def add_session(self, d: Delta) -> None:
        minute_at, hour = self.floors(d.ts)
        student = self._student((d.student_id, hour))
        tutor = _row(self.tutor, (d.tutor_id, hour), _SESSION_ZEROS)
        values = d.values
        for column, value in values.items():
            student[column] += value
            tutor[column] += value
        minute = self._minute(minute_at)
        for column in SESSION_COUNTS:
            minute[column] += values.get(column, 0)

    def add_event(self, e: dict[str, Any]) -> None:
        received = self._received.get(e["received_at"])
        if received is None:  # a batch's events share a few arrival times
            received = self._received[e["received_at"]] = floor_minute(
                datetime.fromisoformat(e["received_at"])
            )
        self._minute(received)["received"] += 1
        minute_at, hour = self.floors(datetime.fromisoformat(e["timestamp"]))
        minute = self._minute(minute_at)
        minute["events"] += 1
        if e["event_type"] == "customer_health_update":
            self._add_health(e["payload"], hour)
        elif e["event_type"] == "ib_call_logged":
            minute["ib_calls"] += 1
            self._add_ib_call(e["payload"], hour)

    def _add_health(self, p: dict[str, Any], hour: datetime) -> None:
        score = p.get("health_score")
        if score is None:
            return
        row = self._student((p["student_id"], hour))
        row["health_sum"] += round(float(score) * 100)  # hundredths: exact, order-free sums
        row["health_count"] += 1

    def _add_ib_call(self, p: dict[str, Any], hour: datetime) -> None:
        row = self._student((p["student_id"], hour))
        row["ib_calls"] += 1
        if p.get("resolved") == False:  # noqa: E712 - None means "not reported"
            row["ib_unresolved"] += 1
        if p.get("priority") == "high":
            row["ib_high_priority"] += 1
        column = _REASON_COLUMNS.get(p.get("reason", "other"))
        if column is not None:
            row[column] += 1

    def write(self) -> None:
        # Sorted rows: concurrent workers lock bucket rows in the same order.
        for model, keys, values, rows in (
            (StudentHourly, ["student_id", "hour"], STUDENT_VALUES, self.student),
            (TutorHourly, ["tutor_id", "hour"], SESSION_VALUES, self.tutor),
        ):
            pick = itemgetter(*values)
            upsert_add(
                table=model._meta.db_table,
                keys=keys,
                values=values,
                rows=[(*k, *pick(v)) for k, v in sorted(rows.items())],
            )
        pick, shard = itemgetter(*MINUTE_VALUES), minute_shard()
        upsert_add(
            table=GlobalMinute._meta.db_table,
            keys=["minute", "shard"],
            values=MINUTE_VALUES,
            rows=[(k, shard, *pick(v)) for k, v in sorted(self.minute.items())],
        )


def fold_buckets(deltas: list[Delta], events: list[dict[str, Any]]) -> None:
    """Add the batch to the hour buckets (student, tutor) and the global minute series, one upsert each."""
    buckets = _Buckets()
    for d in deltas:
        buckets.add_session(d)
    for e in events:
        buckets.add_event(e)
    buckets.write()
