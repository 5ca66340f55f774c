"""Move an installation's raw rows into the partitioned layout (PostgreSQL;
``agents.partitions.layout_upgrade``), in batches of ``PARTITION_MOVE_BATCH_SIZE``
traces (5,000 by default), each batch one transaction, with a progress line
per batch. Resumable: stopped at any point, ``migrate`` goes on from the rows
not yet moved (this migration does nothing else, so running it again is
safe). Serve the new release only once it has finished. On SQLite, which
keeps plain tables, the steps' trace times and the keys are filled in."""

import os
import sys
import time

from django.db import migrations


def _progress_printer():
    started = time.monotonic()
    # One line per batch in a log; one line redrawn on a terminal.
    end = "\r" if sys.stdout.isatty() else "\n"

    def progress(traces: int, total: int, steps: int, scores: int) -> None:
        share = traces / total if total else 1.0
        bar = "#" * int(share * 30)
        rate = traces / max(time.monotonic() - started, 1e-9)
        sys.stdout.write(
            f"  moved {traces:,} of {total:,} traces [{bar:<30}] {share:6.1%} "
            f"({steps:,} steps, {scores:,} scores; {rate:,.0f} traces/s){end}"
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

    dependencies = [("agents", "0013_partitioned_raw_tables")]

    # Not reversible: the plain layout is not restored (restore a backup instead).
    operations = [migrations.RunPython(forward, elidable=False)]
