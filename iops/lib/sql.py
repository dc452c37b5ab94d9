"""Bulk upserts that add to stored values: INSERT … ON CONFLICT DO UPDATE (SQLite ≥ 3.24 and PostgreSQL)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import Any

import orjson
from django.db import connection

from iops.lib.jsontext import json_text

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


@cache
def _column_types(table: str) -> dict[str, str]:
    """PostgreSQL column types of a model's table (model metadata, never input)."""
    from django.apps import apps

    for model in apps.get_models():
        if model._meta.db_table == table:
            return {str(f.column): f.db_type(connection) or "text" for f in model._meta.concrete_fields}
    raise LookupError(f"no model for table {table}")


def _pg_array(values: Sequence[Any], db_type: str) -> list[Any]:
    """Make one column's values homogeneous for a typed array parameter."""
    if db_type == "double precision":
        return [None if v is None else float(v) for v in values]
    if db_type in ("integer", "bigint", "smallint"):
        return [None if v is None else int(v) for v in values]
    if any(hasattr(v, "item") for v in values[:1]):  # numpy scalars
        return [_adapt(v) for v in values]
    return list(values)


def _pg_unnest(types: Sequence[str]) -> str:
    return "unnest(" + ", ".join(f"%b::{t}[]" for t in types) + ")"


_NONE = type(None)
_JSON_KINDS: dict[str, frozenset[type]] = {
    "integer": frozenset({int, _NONE}),
    "bigint": frozenset({int, _NONE}),
    "smallint": frozenset({int, _NONE}),
    "double precision": frozenset({float, int, _NONE}),
    "boolean": frozenset({bool, _NONE}),
    "text": frozenset({str, _NONE}),
    "jsonb": frozenset({str, _NONE}),  # JSON text, as the array path takes it
    "timestamp with time zone": frozenset({datetime, _NONE}),
}


def _json_kinds(db_type: str) -> frozenset[type] | None:
    return _JSON_KINDS.get("text" if db_type.startswith("varchar(") else db_type)


def _finite(values: Sequence[Any]) -> bool:
    return all(math.isfinite(v) for v in values if v is not None)


def _pg_rows(types: Sequence[str], columns: Sequence[Sequence[Any]]) -> tuple[str, list[Any]]:
    """A FROM item (alias v) giving the rows, and its parameters. One JSON array of rows (orjson, in C)
    when every column holds plain values of its type: dumping a typed array per column walks every
    value in Python. Otherwise (numpy scalars, floats in integer columns, NaN, integers beyond 64 bits)
    the typed arrays, which convert."""
    plain = all(
        (kinds := _json_kinds(t)) is not None
        and set(map(type, col)) <= kinds
        and (t != "double precision" or _finite(col))
        for col, t in zip(columns, types, strict=True)
    )
    if plain:
        try:
            data = orjson.dumps(list(zip(*columns, strict=True)))
        except orjson.JSONEncodeError:
            pass
        else:
            cols = ", ".join(f"(e->>{i})::{t}" for i, t in enumerate(types))
            source = f"(SELECT {cols} FROM jsonb_array_elements(%b::jsonb) AS e) AS v"  # noqa: S608 - model types
            return source, [_raw_jsonb(data)]
    return f"{_pg_unnest(types)} AS v", [_pg_array(col, t) for col, t in zip(columns, types, strict=True)]


def _raw_jsonb(data: bytes) -> Any:
    from psycopg.types.json import Jsonb

    return Jsonb(data, dumps=bytes)


def pg_execute(sql: str, params: Sequence[Any], *, fetch: bool = False) -> list[tuple]:
    """Run one statement on Django's PostgreSQL connection (its transaction) with server-side binding:
    `%b` parameters travel in binary. Django's cursors bind on the client, which quotes every element
    of an array parameter through regular expressions — for bulk statements that cost more than
    running them. Not prepared (Django sets no prepare threshold: safe behind a transaction pooler)."""
    import psycopg

    connection.ensure_connection()
    raw = psycopg.Cursor(connection.connection)  # Django's connection never auto-prepares
    if fetch and connection.timezone_name == "UTC":
        # Django loads timestamptz through a Python subclass of psycopg's loader (to set its time
        # zone), which keeps psycopg's C loader out: a tenth of a batch's Python went to parsing
        # timestamps. With the session in UTC (Django sets it) the C loader gives the same values.
        from psycopg.types.datetime import TimestamptzLoader

        raw.adapters.register_loader("timestamptz", TimestamptzLoader)
    # Wrapped like any Django cursor: execute wrappers, query logging, Django's database errors.
    wrap = connection.make_debug_cursor if connection.queries_logged else connection.make_cursor
    with wrap(raw) as cursor:  # type: ignore[arg-type]  # psycopg's cursor is what Django wraps too
        cursor.execute(sql, params)
        return cursor.fetchall() if fetch else []


def _insert(
    table: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    tail: str,
    *,
    returning: str | Sequence[str] | None = None,
) -> list[Any]:
    """Multi-row INSERT in parameter-bounded chunks. Identifiers come from model metadata, never from input.

    `returning` a column name: a list of its values; a sequence of names: a list of tuples."""
    q = connection.ops.quote_name
    col_sql = ", ".join(q(c) for c in columns)
    row_sql = "(" + ", ".join(["%s"] * len(columns)) + ")"
    single = isinstance(returning, str)
    ret_cols = [returning] if isinstance(returning, str) else list(returning or ())
    suffix = f" RETURNING {', '.join(q(c) for c in ret_cols)}" if ret_cols else ""
    returned: list[Any] = []
    if connection.vendor == "postgresql":
        # One array parameter per column: a short, cacheable statement however many rows
        # (a VALUES list with 30,000 placeholders costs more to build than to run).
        column_types = _column_types(table)
        types = [column_types[c] for c in columns]
        source, params = _pg_rows(types, list(zip(*rows, strict=True)))
        sql = f"INSERT INTO {q(table)} ({col_sql}) SELECT * FROM {source} {tail}{suffix}"  # noqa: S608
        fetched = pg_execute(sql, params, fetch=bool(ret_cols))
        return [r[0] for r in fetched] if single else fetched
    with connection.cursor() as cursor:
        for chunk in _chunks(rows, len(columns)):
            sql = f"INSERT INTO {q(table)} ({col_sql}) VALUES {', '.join([row_sql] * len(chunk))} {tail}{suffix}"  # noqa: S608
            cursor.execute(sql, [_adapt(v) for row in chunk for v in row])
            if ret_cols:
                returned.extend(r[0] for r in cursor.fetchall()) if single else returned.extend(
                    tuple(r) for r in cursor.fetchall()
                )
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


def insert_rows(
    *, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], returning: Sequence[str] = ()
) -> list[tuple]:
    """Plain multi-row INSERT (one statement on PostgreSQL); RETURNING `returning` as tuples."""
    if not rows:
        return []
    return _insert(table, columns, rows, "", returning=list(returning) or None)


def upsert(
    *,
    table: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    conflict: Sequence[str],
    update: Sequence[str] | Mapping[str, str],
    where: str = "",
    returning: Sequence[str] = (),
) -> list[tuple]:
    """Insert rows; on a conflict on `conflict`, set the `update` columns: to the new row's value
    (a sequence of names) or to an SQL expression (a mapping) in which `{t}` is the stored row and
    `excluded` the new one. `where` (same placeholders) limits which conflicting rows are updated;
    RETURNING `returning` gives the inserted and updated rows. Expressions come from code, never input."""
    if not rows:
        return []
    q = connection.ops.quote_name
    t = q(table)
    exprs = update if isinstance(update, Mapping) else {c: f"excluded.{q(c)}" for c in update}
    sets = ", ".join(f"{q(c)} = {e.replace('{t}', t)}" for c, e in exprs.items())
    tail = f"ON CONFLICT ({', '.join(q(k) for k in conflict)}) DO UPDATE SET {sets}"
    if where:
        tail += f" WHERE {where.replace('{t}', t)}"
    return _insert(table, columns, rows, tail, returning=list(returning) or None)


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


_PLAIN_FIELDS = {
    "AutoField",
    "BigAutoField",
    "BigIntegerField",
    "BooleanField",
    "CharField",
    "DateTimeField",
    "FloatField",
    "IntegerField",
    "PositiveIntegerField",
    "PositiveSmallIntegerField",
    "SmallIntegerField",
    "TextField",
}


def _json(field: Any, value: Any) -> str:
    """A JSONField value as the JSON text its column takes: the hot path's encoder, or the field's own."""
    return json.dumps(value, cls=field.encoder) if field.encoder else json_text(value)


def _pg_values(field: Any, objs: Sequence[Any]) -> list[Any]:
    """One field's values of many instances, as _pg_rows takes them (JSON as text)."""
    kind = field.get_internal_type()
    if kind == "JSONField":
        return [None if (v := getattr(o, field.attname)) is None else _json(field, v) for o in objs]
    if kind in _PLAIN_FIELDS:  # the driver adapts these as they are
        return [getattr(o, field.attname) for o in objs]
    return [field.get_db_prep_value(getattr(o, field.attname), connection, prepared=False) for o in objs]


def create_objects(*, model: Any, objs: Sequence[Any]) -> list[Any]:
    """bulk_create for the hot path: the instances in one INSERT … RETURNING of their primary keys,
    set on them. On PostgreSQL the rows travel as one JSON array (bulk_create binds every JSON value on
    the client, which cost more than the insert). No signals, as bulk_create."""
    if not objs:
        return []
    meta = model._meta
    fields = [f for f in meta.concrete_fields if not f.primary_key]
    if connection.vendor == "postgresql":
        rows = list(zip(*(_pg_values(f, objs) for f in fields), strict=True))
    else:
        rows = [
            tuple(f.get_db_prep_value(getattr(o, f.attname), connection, prepared=False) for f in fields)
            for o in objs
        ]
    pks = _insert(meta.db_table, [f.column for f in fields], rows, "", returning=meta.pk.column)
    for obj, pk in zip(objs, pks, strict=True):
        obj.pk = pk
        obj._state.adding = False
        obj._state.db = connection.alias
    return list(objs)


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
            f"UPDATE {table} SET {sets} FROM {{source}} ({alias}) "  # noqa: S608 - model metadata
            f"WHERE {table}.{q(cols[0].column)} = v.{q(cols[0].column)}"
        )
        source, params = _pg_rows(types, [_pg_values(f, objs) for f in cols])
        pg_execute(sql.replace("{source}", source), params)
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
