"""Bulk upserts that add to stored values: INSERT … ON CONFLICT DO UPDATE (SQLite ≥ 3.24 and PostgreSQL)."""

from __future__ import annotations

import json
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


def _column_types(table: str) -> dict[str, str]:
    """PostgreSQL column types of a model's table (model metadata, never input)."""
    from django.apps import apps

    for model in apps.get_models():
        if model._meta.db_table == table:
            return {f.column: f.db_type(connection) or "text" for f in model._meta.concrete_fields}
    raise LookupError(f"no model for table {table}")


def _pg_array(values: list[Any], db_type: str) -> list[Any]:
    """Make one column's values homogeneous for a typed array parameter."""
    if db_type == "double precision":
        return [None if v is None else float(v) for v in values]
    if db_type in ("integer", "bigint", "smallint"):
        return [None if v is None else int(v) for v in values]
    return values


def _pg_unnest(types: Sequence[str]) -> str:
    return "unnest(" + ", ".join(f"%s::{t}[]" for t in types) + ")"


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
    if connection.vendor == "postgresql":
        # One array parameter per column: a short, cacheable statement however many rows
        # (a VALUES list with 30,000 placeholders costs more to build than to run).
        column_types = _column_types(table)
        types = [column_types[c] for c in columns]
        sql = f"INSERT INTO {q(table)} ({col_sql}) SELECT * FROM {_pg_unnest(types)} {tail}{suffix}"  # noqa: S608
        params = [_pg_array([_adapt(row[i]) for row in rows], t) for i, t in enumerate(types)]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            if returning:
                returned.extend(r[0] for r in cursor.fetchall())
        return returned
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


def update_rows(*, model: Any, key: str, fields: Sequence[str], objs: Sequence[Any]) -> int:
    """Write `fields` of many model instances in one UPDATE … FROM (VALUES …) per chunk, matched on the
    unique `key` field. Django's bulk_update builds a CASE per field per row, which costs seconds per
    thousand rows; this is one statement (PostgreSQL, and SQLite ≥ 3.33)."""
    if not objs:
        return 0
    meta = model._meta
    cols = [meta.get_field(key), *(meta.get_field(f) for f in fields)]
    q = connection.ops.quote_name
    pg = connection.vendor == "postgresql"
    row_sql = "(" + ", ".join(["%s"] * len(cols)) + ")"
    names = ", ".join(q(f.column) for f in cols)
    table = q(meta.db_table)
    sets = ", ".join(f"{q(f.column)} = v.{q(f.column)}" for f in cols[1:])
    if pg:
        types = [f.db_type(connection) or "text" for f in cols]
        alias = ", ".join(q(f.column) for f in cols)
        sql = (
            f"UPDATE {table} SET {sets} FROM {_pg_unnest(types)} AS v ({alias}) "  # noqa: S608 - model metadata
            f"WHERE {table}.{q(cols[0].column)} = v.{q(cols[0].column)}"
        )
        params = []
        for f, t in zip(cols, types, strict=True):
            if f.get_internal_type() == "JSONField":
                values = [None if (v := getattr(o, f.attname)) is None else json.dumps(v) for o in objs]
            else:
                values = [
                    f.get_db_prep_value(getattr(o, f.attname), connection, prepared=False) for o in objs
                ]
            params.append(_pg_array(values, t))
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
        return len(objs)
    with connection.cursor() as cursor:
        for chunk in _chunks(objs, len(cols)):
            sql = (
                f"WITH v ({names}) AS (VALUES {', '.join([row_sql] * len(chunk))}) "  # noqa: S608 - model metadata
                f"UPDATE {table} SET {sets} FROM v WHERE {table}.{q(cols[0].column)} = v.{q(cols[0].column)}"
            )
            cursor.execute(
                sql,
                [
                    f.get_db_prep_value(getattr(o, f.attname), connection, prepared=False)
                    for o in chunk
                    for f in cols
                ],
            )
    return len(objs)
