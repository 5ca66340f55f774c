from django.db import migrations

from metrics.sketch import POSTGRES_FUNCTIONS


def install(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES_FUNCTIONS)


def uninstall(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "DROP FUNCTION IF EXISTS ta_sketch_merge(jsonb, jsonb); "
            "DROP FUNCTION IF EXISTS ta_latency_bucket(double precision);"
        )


class Migration(migrations.Migration):
    dependencies = [("dashboard", "0001_initial")]
    operations = [migrations.RunPython(install, uninstall)]
