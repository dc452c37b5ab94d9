"""The raw event table keeps only the indexes something reads (see ingest.models.Event): the unique
constraint on event_id is added before the old unique index goes (never a moment without it), and the
entity-id indexes become partial plain indexes. On a large table this rebuilds three indexes inside
the migration's transaction: run it in a quiet window (README, Operations)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("ingest", "0003_worker_stats_ingest_counters"),
    ]

    operations = [
        migrations.AddConstraint(
            model_name="event",
            constraint=models.UniqueConstraint(fields=("event_id",), name="ingest_event_id_unique"),
        ),
        migrations.AlterField(
            model_name="event",
            name="event_id",
            field=models.CharField(max_length=64),
        ),
        migrations.AlterField(
            model_name="event",
            name="event_type",
            field=models.CharField(max_length=40),
        ),
        migrations.AddIndex(
            model_name="event",
            index=models.Index(
                condition=models.Q(("student_id", ""), _negated=True),
                fields=["student_id"],
                name="ingest_event_student",
            ),
        ),
        migrations.AddIndex(
            model_name="event",
            index=models.Index(
                condition=models.Q(("tutor_id", ""), _negated=True),
                fields=["tutor_id"],
                name="ingest_event_tutor",
            ),
        ),
        migrations.AlterField(
            model_name="event",
            name="student_id",
            field=models.CharField(blank=True, default="", max_length=64),
        ),
        migrations.AlterField(
            model_name="event",
            name="tutor_id",
            field=models.CharField(blank=True, default="", max_length=64),
        ),
    ]
