"""Raw traces, steps and scores in daily time partitions on PostgreSQL
(``agents.partitions``); a trace's public id is claimed in ``TraceKey``. This
step prepares the plain tables; 0014 moves the rows, 0015 completes the steps'
time and uniqueness."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
        ("agents", "0012_step_texts_from_trace"),
    ]

    operations = [
        migrations.CreateModel(
            name="TraceKey",
            fields=[
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "organisation", "public_id", blank=True, editable=False, primary_key=True, serialize=False
                    ),
                ),
                (
                    "organisation",
                    models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=models.deletion.CASCADE,
                        to="accounts.organisation",
                    ),
                ),
                ("public_id", models.CharField(max_length=200)),
                ("created_at", models.DateTimeField()),
            ],
            options={"indexes": [models.Index(fields=["created_at"], name="trace_key_time")]},
        ),
        migrations.RemoveConstraint(model_name="trace", name="trace_public_id"),
        migrations.RemoveConstraint(model_name="tracestep", name="step_position"),
        migrations.AddField(model_name="tracestep", name="trace_created_at", field=models.DateTimeField(null=True)),
    ]
