"""API key scopes (issue 21). New keys get `ingest` only; keys that exist when this runs keep what they
could do for the scripts that use them — send events and read the API — but not `act`: acknowledging,
resolving or dismissing alerts with a key is now granted explicitly (admin → API keys)."""

from django.db import migrations, models

import ingest.models


def existing_keys_keep_ingest_and_read(apps, schema_editor):
    apps.get_model("ingest", "ApiKey").objects.update(scopes=["ingest", "read"])


class Migration(migrations.Migration):
    dependencies = [("ingest", "0006_suspect_delivery")]

    operations = [
        migrations.AddField(
            model_name="apikey",
            name="scopes",
            field=models.JSONField(
                default=ingest.models.default_api_key_scopes,
                help_text="ingest: POST /api/ingest · read: GET /api/… · act: alert acknowledge/resolve/dismiss",
            ),
        ),
        migrations.RunPython(existing_keys_keep_ingest_and_read, migrations.RunPython.noop),
    ]
