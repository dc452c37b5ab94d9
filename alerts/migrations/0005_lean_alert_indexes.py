"""Fewer indexes on alerts: every repeat of an active alert rewrites its row, and each index is one
more entry per repeat (17 → 9 on PostgreSQL). Dropped: the LIKE-prefix (`_like`) companions of
fingerprint, entity_id, type, severity and status, and the single-column type, severity and status
indexes (status is the prefix of the status/last_seen composite). Fingerprint and entity_id keep a
plain index under a name of their own.

The field changes are state only: Django's AlterField dropping `db_index` on fingerprint would also
drop the partial unique index one_active_alert_per_fingerprint (an index on that one column), so the
database side names the indexes it drops.
"""

from django.conf import settings
from django.db import migrations, models

# (column, Django's index name); on PostgreSQL each also had a `…_like` copy.
DROPPED = [
    ("fingerprint", "alerts_alert_fingerprint_6b70c765"),
    ("entity_id", "alerts_alert_entity_id_5a951d80"),
    ("type", "alerts_alert_type_3021f46f"),
    ("severity", "alerts_alert_severity_99ce3818"),
    ("status", "alerts_alert_status_19c9bb06"),
]


def drop(apps, schema_editor):
    q = schema_editor.quote_name
    for _, name in DROPPED:
        schema_editor.execute(f"DROP INDEX IF EXISTS {q(name)}")
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(f"DROP INDEX IF EXISTS {q(name + '_like')}")


def recreate(apps, schema_editor):
    q = schema_editor.quote_name
    for column, name in DROPPED:
        schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {q(name)} ON alerts_alert ({q(column)})")
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(
                f"CREATE INDEX IF NOT EXISTS {q(name + '_like')} ON alerts_alert ({q(column)} varchar_pattern_ops)"
            )


class Migration(migrations.Migration):
    dependencies = [
        ("alerts", "0004_rate_minute"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="alert",
                    name="entity_id",
                    field=models.CharField(max_length=200),
                ),
                migrations.AlterField(
                    model_name="alert",
                    name="fingerprint",
                    field=models.CharField(help_text="type:entity_type:entity_id", max_length=200),
                ),
                migrations.AlterField(
                    model_name="alert",
                    name="severity",
                    field=models.CharField(
                        choices=[("info", "Info"), ("warning", "Warning"), ("critical", "Critical")],
                        max_length=10,
                    ),
                ),
                migrations.AlterField(
                    model_name="alert",
                    name="status",
                    field=models.CharField(
                        choices=[
                            ("open", "Open"),
                            ("acknowledged", "Acknowledged"),
                            ("resolved", "Resolved"),
                            ("dismissed", "Dismissed"),
                        ],
                        default="open",
                        max_length=15,
                    ),
                ),
                migrations.AlterField(
                    model_name="alert",
                    name="type",
                    field=models.CharField(
                        choices=[
                            ("high_ib_call_frequency", "High IB call frequency"),
                            ("low_health_score", "Low health score"),
                            ("supply_demand_imbalance", "Supply–demand imbalance"),
                            ("first_session_failed", "First session failed"),
                            ("velocity_drop", "Session velocity drop"),
                            ("tutor_overload", "Tutor overload"),
                            ("rate_anomaly", "Rate anomaly"),
                        ],
                        max_length=40,
                    ),
                ),
            ],
            database_operations=[migrations.RunPython(drop, recreate)],
        ),
        migrations.AddIndex(
            model_name="alert",
            index=models.Index(fields=["fingerprint"], name="alert_fingerprint"),
        ),
        migrations.AddIndex(
            model_name="alert",
            index=models.Index(fields=["entity_id"], name="alert_entity_id"),
        ),
    ]
