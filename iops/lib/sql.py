"""Bulk upserts that add to stored values: INSERT … ON CONFLICT DO UPDATE (SQLite ≥ 3.24 and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from django.db import connection

_MAX_PARAMS = 30_000  # below SQLite's 32,766 and PostgreSQL's 65,535 bind parameters


def _adapt(value: Any) -> Any:
    if isinstance(value, datetime):
        return connection.ops.adapt_datetimefield_value(value)
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    return value


def _chunks(rows: Sequence[Sequence[Any]], width: int) -> Iterable[Sequence[Sequence[Any]]]:
    size = max(1, _MAX_PARAMS // max(width, 1))
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _insert(
    table: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    tail: str,
    *,
    returning: str | None = None,
) -> list[Any]:
    """Multi-row INSERT in parameter-bounded chunks. Identifiers come from model metadata, never from input."""
    q = connection.ops.quote_name
    col_sql = ", ".join(q(c) for c in columns)
    row_sql = "(" + ", ".join(["%s"] * len(columns)) + ")"
    suffix = f" RETURNING {q(returning)}" if returning else ""
    returned: list[Any] = []
    with connection.cursor() as cursor:
        for chunk in _chunks(rows, len(columns)):
            sql = f"INSERT INTO {q(table)} ({col_sql}) VALUES {', '.join([row_sql] * len(chunk))} {tail}{suffix}"  # noqa: S608
            cursor.execute(sql, [_adapt(v) for row in chunk for v in row])
            if returning:
                returned.extend(r[0] for r in cursor.fetchall())
    return returned


def upsert_add(
    *, table: str, keys: Sequence[str], values: Sequence[str], rows: Sequence[Sequence[Any]]
) -> int:
    """Insert rows (keys + values, in that order); on a key conflict add the values to the stored ones."""
    if not rows:
        return 0
    q = connection.ops.quote_name
    sets = ", ".join(f"{q(c)} = {q(table)}.{q(c)} + excluded.{q(c)}" for c in values)
    tail = f"ON CONFLICT ({', '.join(q(k) for k in keys)}) DO UPDATE SET {sets}"
    _insert(table, [*keys, *values], rows, tail)
    return len(rows)


def insert_ignore(
    *, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], conflict: Sequence[str]
) -> int:
    if not rows:
        return 0
    q = connection.ops.quote_name
    _insert(table, columns, rows, f"ON CONFLICT ({', '.join(q(c) for c in conflict)}) DO NOTHING")
    return len(rows)


def insert_returning_new(
    *, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], conflict: str
) -> set[Any]:
    """Insert, skipping conflicts, and return the `conflict` column of the rows actually inserted.

    This is what makes processing exactly-once in effect: a redelivered event is not returned,
    even when two workers race on it (the second waits on the first's row lock, then skips).
    """
    if not rows:
        return set()
    q = connection.ops.quote_name
    return set(_insert(table, columns, rows, f"ON CONFLICT ({q(conflict)}) DO NOTHING", returning=conflict))
