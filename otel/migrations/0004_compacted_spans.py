"""Packed spans move from the received-trace row to a table of their own,
partitioned by their trace's day on PostgreSQL (0005 partitions it and moves
them; 0006 drops the old column)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_invitation"),
        ("agents", "0015_step_times_required"),
        ("otel", "0003_received_spans_compaction"),
    ]

    operations = [
        migrations.CreateModel(
            name="CompactedSpans",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("trace_id", models.CharField(max_length=32)),
                ("created_at", models.DateTimeField()),
                ("packed", models.BinaryField()),
                (
                    "organisation",
                    models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=models.deletion.CASCADE,
                        to="accounts.organisation",
                    ),
                ),
            ],
            options={"indexes": [models.Index(fields=["organisation", "trace_id"], name="compacted_spans_trace")]},
        ),
        migrations.AddField(
            model_name="receivedtrace", name="compacted", field=models.BooleanField(db_default=False, default=False)
        ),
        migrations.RemoveIndex(model_name="receivedtrace", name="received_trace_open"),
        migrations.AddIndex(
            model_name="receivedtrace",
            index=models.Index(condition=models.Q(("compacted", False)), fields=["id"], name="received_trace_spans_open"),
        ),
    ]
