from django.db import migrations

from metrics.sketch import POSTGRES_FUNCTIONS


def install(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES_FUNCTIONS)


class Migration(migrations.Migration):
    dependencies = [("dashboard", "0003_lean_indexes")]
    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
