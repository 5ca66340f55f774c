"""Raw traces, steps and scores in daily time partitions on PostgreSQL
(``agents.partitions``); a trace's public id is claimed in ``TraceKey``.

On an installation with data this moves every row into the partitioned tables
in batches of ``PARTITION_MOVE_BATCH_SIZE`` traces (5,000 by default), each
batch one transaction, with a progress line per batch. It is resumable: stopped
at any point, ``migrate`` goes on from the rows not yet moved. Serve the new
release only once it has finished. SQLite keeps plain tables."""

import os
import sys
import time

from django.db import migrations, models


def _progress_printer():
    started = time.monotonic()

    def progress(traces: int, total: int, steps: int, scores: int) -> None:
        share = traces / total if total else 1.0
        bar = "#" * int(share * 30)
        rate = traces / max(time.monotonic() - started, 1e-9)
        sys.stdout.write(
            f"\n  moved {traces:,} of {total:,} traces [{bar:<30}] {share:6.1%} "
            f"({steps:,} steps, {scores:,} scores; {rate:,.0f} traces/s)"
        )
        sys.stdout.flush()

    return progress


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        from agents.partitions import layout_upgrade

        batch = int(os.environ.get("PARTITION_MOVE_BATCH_SIZE", "5000"))
        moved = layout_upgrade(batch_size=batch, progress=_progress_printer())
        if moved["traces"]:
            sys.stdout.write(f"\n  partitioned layout ready: {moved['traces']:,} traces moved\n")
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "UPDATE agents_tracestep SET trace_created_at = "
            "(SELECT created_at FROM agents_trace WHERE agents_trace.id = agents_tracestep.trace_id)"
        )
        cursor.execute(
            "INSERT INTO agents_tracekey (organisation_id, public_id, created_at) "
            "SELECT organisation_id, public_id, created_at FROM agents_trace"
        )


class Migration(migrations.Migration):
    # Each batch commits on its own (PostgreSQL), so an interrupted upgrade resumes.
    atomic = False

    dependencies = [
        ("accounts", "0001_initial"),
        ("agents", "0012_step_texts_from_trace"),
    ]

    operations = [
        migrations.CreateModel(
            name="TraceKey",
            fields=[
                ("pk", models.CompositePrimaryKey("organisation", "public_id", blank=True, editable=False, primary_key=True, serialize=False)),
                ("organisation", models.ForeignKey(db_constraint=False, db_index=False, on_delete=models.deletion.CASCADE, to="accounts.organisation")),
                ("public_id", models.CharField(max_length=200)),
                ("created_at", models.DateTimeField()),
            ],
            options={"indexes": [models.Index(fields=["created_at"], name="trace_key_time")]},
        ),
        migrations.RemoveConstraint(model_name="trace", name="trace_public_id"),
        migrations.RemoveConstraint(model_name="tracestep", name="step_position"),
        migrations.AddField(model_name="tracestep", name="trace_created_at", field=models.DateTimeField(null=True)),
        migrations.RunPython(forward, migrations.RunPython.noop, elidable=False),
        migrations.AlterField(model_name="tracestep", name="trace_created_at", field=models.DateTimeField()),
        migrations.AddConstraint(
            model_name="tracestep",
            constraint=models.UniqueConstraint(fields=("trace", "position", "trace_created_at"), name="step_position"),
        ),
    ]
