"""One index per hourly table for both the upsert and the window sums (PostgreSQL only).

0006 added a covering index `(entity, hour) INCLUDE (counters)` beside the unique constraint on the same
`(entity, hour)` key, so every new hour bucket went into two B-trees ordered by entity — a random leaf
page each, among millions of rows once the history is long (the student bucket upsert took 11 ms per
1,000-event batch at 1M stored events and 30 ms at 10M). The unique constraint itself now carries the
counters (`UNIQUE (entity, hour) INCLUDE (…)`): `ON CONFLICT (entity, hour)` still infers it (INCLUDE
columns are not part of the key) and the window sums read it index-only as before. The model state is
unchanged (the constraint keeps its name and key columns; Django has nothing to say about INCLUDE on
SQLite); the reverse migration restores 0006's pair.
"""

from importlib import import_module

from django.db import migrations

# 0006, frozen: INDEXES = table -> (covering index name, entity column, counted columns); create() builds them.
COVERING = import_module("metrics.migrations.0006_hourly_window_covering_indexes")
UNIQUE = {"metrics_studenthourly": "student_hourly_unique", "metrics_tutorhourly": "tutor_hourly_unique"}


def _recreate_unique(schema_editor, *, carry_counters: bool) -> None:
    for table, (_, key, columns) in COVERING.INDEXES.items():
        include = f" INCLUDE ({', '.join(columns)})" if carry_counters else ""
        schema_editor.execute(
            f"ALTER TABLE {table} DROP CONSTRAINT {UNIQUE[table]}, "
            f"ADD CONSTRAINT {UNIQUE[table]} UNIQUE ({key}, hour){include}"
        )


def merge(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    _recreate_unique(schema_editor, carry_counters=True)
    for name, _, _ in COVERING.INDEXES.values():
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


def split(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    COVERING.create(apps, schema_editor)
    _recreate_unique(schema_editor, carry_counters=False)


class Migration(migrations.Migration):
    dependencies = [("metrics", "0007_drop_like_indexes_on_hot_tables")]

    operations = [migrations.RunPython(merge, split)]
