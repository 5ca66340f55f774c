"""Steps carry their trace's time (filled in by 0014), and a step's position
is unique within its trace on that time (the partition key, on PostgreSQL)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("agents", "0014_partitioned_raw_tables_move")]

    operations = [
        migrations.AlterField(model_name="tracestep", name="trace_created_at", field=models.DateTimeField()),
        migrations.AddConstraint(
            model_name="tracestep",
            constraint=models.UniqueConstraint(
                fields=("trace", "position", "trace_created_at"), name="step_position"
            ),
        ),
        # Not reversible (nor is 0014): the plain layout is not restored; restore a backup instead.
        migrations.RunPython(migrations.RunPython.noop, elidable=False),
    ]
