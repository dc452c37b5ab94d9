"""Covering indexes for the window sums (PostgreSQL only).

A snapshot refresh sums each touched entity's hour buckets of the last 30 days. Through the unique
(entity, hour) index that is one heap page per bucket, scattered over the table as the buckets were
written hour after hour; the batch's read grew with every bucket an entity gained (students
7 → 48 ms, tutors 7 → 35 ms per 1,000-event batch from 30k to 290k stored events). With the counted
columns in an index ordered by (entity, hour), the read is an index-only scan over an entity's
adjacent entries; autovacuum is told to visit these tables more often so the visibility map that
index-only scans rely on stays current. SQLite has no INCLUDE: its read stays on the unique index.
"""

from django.db import migrations

INDEXES = {
    "metrics_studenthourly": (
        "student_hourly_window",
        "student_id",
        [
            "sessions_started",
            "sessions_completed",
            "sessions_unsuccessful",
            "rating_sum",
            "rating_count",
            "minutes",
            "ib_calls",
            "ib_unresolved",
            "ib_high_priority",
            "ib_scheduling_issue",
            "ib_technical_problem",
            "ib_tutor_concern",
            "ib_billing_question",
            "ib_general_inquiry",
            "ib_other",
        ],
    ),
    "metrics_tutorhourly": (
        "tutor_hourly_window",
        "tutor_id",
        [
            "sessions_started",
            "sessions_completed",
            "sessions_unsuccessful",
            "rating_sum",
            "rating_count",
            "minutes",
        ],
    ),
}
VACUUM = "autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.02"


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table, (name, key, columns) in INDEXES.items():
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({key}, hour) INCLUDE ({', '.join(columns)})"
        )
        schema_editor.execute(f"ALTER TABLE {table} SET ({VACUUM})")


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table, (name, _, _) in INDEXES.items():
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")
        schema_editor.execute(
            f"ALTER TABLE {table} RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_insert_scale_factor)"
        )


class Migration(migrations.Migration):
    dependencies = [("metrics", "0005_supply_demand_fold_state")]

    operations = [migrations.RunPython(create, drop)]
