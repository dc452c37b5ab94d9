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

# 0006's covering indexes: table -> (index name, entity column, counted columns). Frozen with 0006.
WINDOW = import_module("metrics.migrations.0006_hourly_window_covering_indexes").INDEXES
UNIQUE = {"metrics_studenthourly": "student_hourly_unique", "metrics_tutorhourly": "tutor_hourly_unique"}


def merge(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table, (window, key, columns) in WINDOW.items():
        unique = UNIQUE[table]
        schema_editor.execute(
            f"ALTER TABLE {table} DROP CONSTRAINT {unique}, "
            f"ADD CONSTRAINT {unique} UNIQUE ({key}, hour) INCLUDE ({', '.join(columns)})"
        )
        schema_editor.execute(f"DROP INDEX IF EXISTS {window}")


def split(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table, (window, key, columns) in WINDOW.items():
        unique = UNIQUE[table]
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {window} ON {table} ({key}, hour) INCLUDE ({', '.join(columns)})"
        )
        schema_editor.execute(
            f"ALTER TABLE {table} DROP CONSTRAINT {unique}, ADD CONSTRAINT {unique} UNIQUE ({key}, hour)"
        )


class Migration(migrations.Migration):
    dependencies = [("metrics", "0007_drop_like_indexes_on_hot_tables")]

    operations = [migrations.RunPython(merge, split)]
