"""Drop PostgreSQL's LIKE-prefix (`varchar_pattern_ops`) copies of the indexes on the tables every
batch rewrites (PostgreSQL only).

Django adds a `…_like` index beside the index of every indexed or unique CharField on PostgreSQL. On
sessions (session_id, student_id, tutor_id), the student session facts and the student and tutor
snapshots (student_id, tutor_id) nothing searches by prefix — lookups are exact, the admin's searches are `=` — while every row a batch
inserts or rewrites (a session completed, a snapshot refreshed) adds an entry to each. The model state
is unchanged (Django does not record these indexes; when it drops one itself it says IF EXISTS), and
the reverse migration recreates them under Django's names.
"""

from django.db import migrations

LIKE_INDEXES = {
    "metrics_session": ["session_id", "student_id", "tutor_id"],
    "metrics_studentsnapshot": ["student_id"],
    "metrics_studentsessionfacts": ["student_id"],
    "metrics_tutorsnapshot": ["tutor_id"],
}


def _names(schema_editor):
    for table, columns in LIKE_INDEXES.items():
        for column in columns:
            yield table, column, schema_editor._create_index_name(table, [column], suffix="_like")


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for _, _, name in _names(schema_editor):
        schema_editor.execute(f"DROP INDEX IF EXISTS {schema_editor.quote_name(name)}")


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    q = schema_editor.quote_name
    for table, column, name in _names(schema_editor):
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {q(name)} ON {q(table)} ({q(column)} varchar_pattern_ops)"
        )


class Migration(migrations.Migration):
    dependencies = [("metrics", "0006_hourly_window_covering_indexes")]

    operations = [migrations.RunPython(drop, create)]
