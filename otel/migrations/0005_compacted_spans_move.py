"""Partition the packed spans' table by day (PostgreSQL) and move every packed
form there from its received-trace row, in batches of
``PARTITION_MOVE_BATCH_SIZE`` traces, each one transaction. Resumable: a row
still holding its packed spans is one not yet moved."""

import os

from django.db import migrations

# The packed spans of a batch, in the partition of their product trace's day
# (of the first span's arrival for a trace never derived).
_MOVE = """
WITH batch AS (
    SELECT r.id, r.organisation_id, r.trace_id, r.compacted_spans,
           coalesce(k.created_at, r.first_received_at) AS created_at
    FROM otel_receivedtrace r
    LEFT JOIN agents_tracekey k ON k.organisation_id = r.organisation_id AND k.public_id = 'otel-' || r.trace_id
    WHERE r.compacted_spans IS NOT NULL
    ORDER BY r.id LIMIT %(n)s
),
moved AS (
    INSERT INTO otel_compactedspans (organisation_id, trace_id, created_at, packed)
    SELECT organisation_id, trace_id, created_at, compacted_spans FROM batch
)
UPDATE otel_receivedtrace r SET compacted = true, compacted_spans = NULL FROM batch WHERE r.id = batch.id
"""
_MOVE_PLAIN = """
INSERT INTO otel_compactedspans (organisation_id, trace_id, created_at, packed)
SELECT r.organisation_id, r.trace_id, coalesce(k.created_at, r.first_received_at), r.compacted_spans
FROM otel_receivedtrace r
LEFT JOIN agents_tracekey k ON k.organisation_id = r.organisation_id AND k.public_id = 'otel-' || r.trace_id
WHERE r.compacted_spans IS NOT NULL
"""
_DAYS = """
SELECT DISTINCT coalesce(k.created_at, r.first_received_at)
FROM (SELECT * FROM otel_receivedtrace WHERE compacted_spans IS NOT NULL ORDER BY id LIMIT %(n)s) r
LEFT JOIN agents_tracekey k ON k.organisation_id = r.organisation_id AND k.public_id = 'otel-' || r.trace_id
"""


def forward(apps, schema_editor):
    from django.db import connection, transaction

    from agents.partitions import partitions_ensure, table_partition
    from otel.compaction import COMPACTED_PARTITIONS

    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_MOVE_PLAIN)
            cursor.execute(
                "UPDATE otel_receivedtrace SET compacted = 1, compacted_spans = NULL "
                "WHERE compacted_spans IS NOT NULL"
            )
        return
    table_partition(COMPACTED_PARTITIONS)
    batch = int(os.environ.get("PARTITION_MOVE_BATCH_SIZE", "5000"))
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_DAYS, {"n": batch})
            days = [day for (day,) in cursor.fetchall()]
            if not days:
                return
            partitions_ensure(moments=days)
            cursor.execute(_MOVE, {"n": batch})


class Migration(migrations.Migration):
    # Each batch commits on its own, so an interrupted move resumes.
    atomic = False

    dependencies = [("otel", "0004_compacted_spans")]

    # Not reversible: the packed spans stay in their own table.
    operations = [migrations.RunPython(forward, elidable=False)]
