"""A batch added to the hour buckets (student, tutor) and the global minute series (one shard's rows):
counted in memory by column name, then one additive upsert per table."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from operator import itemgetter
from typing import Any

from iops.lib.sql import upsert_add
from metrics.models import GLOBAL_MINUTE_SHARDS, GlobalMinute, StudentHourly, TutorHourly
from metrics.services.columns import MINUTE_VALUES, SESSION_COUNTS, SESSION_VALUES, STUDENT_VALUES
from metrics.services.sessions import Delta
from metrics.vocabulary import IB_REASONS
from metrics.windows import floor_hour, floor_minute

Counts = dict[str, int]


def _zeros(columns: list[str]) -> Callable[[], Counts]:
    return lambda: dict.fromkeys(columns, 0)


_REASON_COLUMNS = {r: f"ib_{r}" for r in IB_REASONS}


def minute_shard() -> int:
    """The shard of the global minute series a batch adds to. Random per batch: every batch of a live
    stream writes the current minute and holds its row locks until commit, so with one row a minute
    concurrent workers would take turns; two concurrent batches now share a row once in
    GLOBAL_MINUTE_SHARDS, and never for long (a fixed shard per worker would share one for good)."""
    return random.randrange(GLOBAL_MINUTE_SHARDS)  # noqa: S311 - spreading writes, not a secret


class _Buckets:
    """Counts per (student, hour), (tutor, hour) and minute, each row a dict of its table's values."""

    def __init__(self) -> None:
        self.student: defaultdict[tuple[str, datetime], Counts] = defaultdict(_zeros(STUDENT_VALUES))
        self.tutor: defaultdict[tuple[str, datetime], Counts] = defaultdict(_zeros(SESSION_VALUES))
        self.minute: defaultdict[datetime, Counts] = defaultdict(_zeros(MINUTE_VALUES))

    def add_session(self, d: Delta) -> None:
        hour = floor_hour(d.ts)
        student, tutor = self.student[(d.student_id, hour)], self.tutor[(d.tutor_id, hour)]
        for column, value in d.values.items():
            student[column] += value
            tutor[column] += value
        minute = self.minute[floor_minute(d.ts)]
        for column in SESSION_COUNTS:
            minute[column] += d.values.get(column, 0)

    def add_event(self, e: dict[str, Any]) -> None:
        self.minute[floor_minute(datetime.fromisoformat(e["received_at"]))]["received"] += 1
        ts = datetime.fromisoformat(e["timestamp"])
        minute = self.minute[floor_minute(ts)]
        minute["events"] += 1
        if e["event_type"] == "customer_health_update":
            self._add_health(e["payload"], ts)
        elif e["event_type"] == "ib_call_logged":
            minute["ib_calls"] += 1
            self._add_ib_call(e["payload"], ts)

    def _add_health(self, p: dict[str, Any], ts: datetime) -> None:
        score = p.get("health_score")
        if score is None:
            return
        row = self.student[(p["student_id"], floor_hour(ts))]
        row["health_sum"] += round(float(score) * 100)  # hundredths: exact, order-free sums
        row["health_count"] += 1

    def _add_ib_call(self, p: dict[str, Any], ts: datetime) -> None:
        row = self.student[(p["student_id"], floor_hour(ts))]
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
