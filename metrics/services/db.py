"""The statements the fold and the refresh share: reads of rows by id and of window sums (one array
parameter on PostgreSQL), and snapshot rows created or upserted by column name."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from django.db import connection

from iops.lib.sql import insert_ignore, pg_execute, upsert
from metrics.windows import window_start

CHUNK = 2000  # ids per snapshot statement


def chunks(values: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def vendor_c(column: str) -> str:
    """A text column compared byte-wise (as Python compares str) whatever the database's collation."""
    return f'{column} COLLATE "C"' if connection.vendor == "postgresql" else column


def select(sql: str, params: list[Any]) -> list[tuple]:
    """A read with `%s` placeholders: bound on the server in binary on PostgreSQL (an array of ids is
    one parameter, not thousands of quoted literals), through Django's cursor on SQLite."""
    if connection.vendor == "postgresql":
        return pg_execute(sql.replace("%s", "%b"), params, fetch=True)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def in_ids(column: str, ids: Sequence[str]) -> tuple[str, list[Any]]:
    """`column` is one of `ids`: one array parameter on PostgreSQL, a placeholder list on SQLite."""
    if connection.vendor == "postgresql":
        return f"{column} = ANY(%s::varchar[])", [list(ids)]
    return f"{column} IN ({', '.join(['%s'] * len(ids))})", list(ids)


def rows_by_id(model: Any, key: str, ids: Sequence[str], columns: Sequence[str]) -> dict[str, dict[str, Any]]:
    """{id: {column: value}} for the rows of these ids."""
    if connection.vendor != "postgresql":
        found = model.objects.filter(**{f"{key}__in": ids}).values_list(key, *columns)
    else:
        q = connection.ops.quote_name
        where, params = in_ids(q(key), ids)
        found = select(
            f"SELECT {q(key)}, {', '.join(q(c) for c in columns)} FROM {q(model._meta.db_table)} WHERE {where}",  # noqa: S608 - model metadata
            params,
        )
    # Dicts, not NamedTuples: a dict of plain values is not tracked by the garbage collector, and a
    # refresh holds thousands of these rows at once.
    return {r[0]: dict(zip(columns, r[1:], strict=True)) for r in found}


class Windows:
    """Window sums over hour buckets, name -> (bucket column, days), read as {name: sum} per entity
    (`first_hour`: also the earliest bucket in the widest window, under "first_hour")."""

    def __init__(self, spec: Mapping[str, tuple[str, int]], *, first_hour: bool = False) -> None:
        self.spec = dict(spec)
        self.first_hour = first_hour
        self.names = [*spec, *(["first_hour"] if first_hour else [])]
        self.empty: dict[str, Any] = {
            **dict.fromkeys(spec, 0),
            **({"first_hour": None} if first_hour else {}),
        }


def window_sums(
    model: Any, key: str, ids: Sequence[str], windows: Windows, now: datetime
) -> dict[str, dict[str, Any]]:
    """{id: {window name: sum}} over the hour buckets up to `now`, one query. Ids without a bucket in
    the widest window are absent."""
    q = connection.ops.quote_name
    adapt = connection.ops.adapt_datetimefield_value
    oldest = max(days for _, days in windows.spec.values())
    sums, params = [], []
    for column, days in windows.spec.values():
        sums.append(f"SUM(CASE WHEN {q('hour')} >= %s THEN {q(column)} ELSE 0 END)")
        params.append(adapt(window_start(now, days)))
    if windows.first_hour:
        sums.append(f"MIN({q('hour')})")
    where, id_params = in_ids(q(key), ids)
    sql = (
        f"SELECT {q(key)}, {', '.join(sums)} FROM {q(model._meta.db_table)} "  # noqa: S608 - model metadata
        f"WHERE {where} AND {q('hour')} >= %s AND {q('hour')} <= %s GROUP BY {q(key)}"
    )
    rows = select(sql, [*params, *id_params, adapt(window_start(now, oldest)), adapt(now)])
    names = windows.names
    found = {row[0]: dict(zip(names, row[1:], strict=True)) for row in rows}  # SUM … ELSE 0: never NULL
    if windows.first_hour and connection.vendor != "postgresql":  # SQLite answers MIN(hour) as text
        for w in found.values():
            w["first_hour"] = _as_datetime(w["first_hour"])
    return found


def _as_datetime(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def rows_ensure(
    *, model: Any, keys: Sequence[str], ids: Iterable[tuple], defaults: Mapping[str, Any]
) -> None:
    """Create the rows of these key tuples that do not exist yet, with `defaults` for the other columns."""
    fill = tuple(defaults.values())
    insert_ignore(
        table=model._meta.db_table,
        columns=[*keys, *defaults],
        rows=[(*k, *fill) for k in sorted(ids)],
        conflict=list(keys),
    )


@dataclass(frozen=True)
class SnapshotTable:
    """A snapshot table: one row per entity (`key`); a row any statement creates gets `insert_defaults`
    for its NOT NULL columns without a database default."""

    model: Any
    key: str
    insert_defaults: Mapping[str, Any]

    def upsert(
        self, rows: list[dict[str, Any]], now: datetime, *, columns: Sequence[str] = (), where: str = ""
    ) -> list[tuple]:
        """Upsert rows, dicts of the key and the `columns` to write (by default every other key of the
        first row): a missing row is created, an existing one gets the columns set (only where `where`
        holds). Returns the keys written, as 1-tuples."""
        if not rows:
            return []
        key, defaults = self.key, self.insert_defaults
        columns = list(columns) or [c for c in rows[0] if c != key]
        extra = [c for c in ("as_of", "updated_at", *defaults) if c not in columns]
        fill = tuple(now if c in ("as_of", "updated_at") else defaults[c] for c in extra)
        pick = itemgetter(key, *columns)
        return upsert(
            table=self.model._meta.db_table,
            columns=[key, *columns, *extra],
            rows=[(*pick(row), *fill) for row in rows],
            conflict=[key],
            update=columns,
            where=where,
            returning=[key],
        )

    def ensure(self, ids: Iterable[str], now: datetime) -> None:
        """Rows for the entities first seen (the rebuild, which refreshes once at the end)."""
        defaults = {"as_of": now, "updated_at": now, **self.insert_defaults}
        rows_ensure(model=self.model, keys=[self.key], ids={(i,) for i in ids}, defaults=defaults)
