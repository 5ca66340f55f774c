"""Conversations keep their tokens, latency and cost (kept current by ingestion
from here on); existing conversations are summed from their traces and calls,
a batch of conversations per transaction, so ingestion waits for one batch at most."""

from decimal import Decimal

import django.db.models.expressions
import django.db.models.functions.comparison
from django.db import migrations, models, transaction

BATCH = 20_000

# Sums of each conversation's traces, and the cost of its ended call, for the
# conversations whose id is in [lo, hi). Both read by conversation id through
# an index (traces by trace_session_time, calls by their unique conversation).
BACKFILL = [
    """
    UPDATE agents_session SET
        input_tokens = t.input_tokens, output_tokens = t.output_tokens,
        latency_count = t.latency_count, latency_sum_ms = t.latency_sum_ms,
        llm_cost_usd = t.llm_cost_usd, unpriced_traces = t.unpriced_traces
    FROM (
        SELECT session_id, sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
            count(latency_ms) AS latency_count, coalesce(sum(latency_ms), 0) AS latency_sum_ms,
            coalesce(sum(cost_usd), 0) AS llm_cost_usd,
            sum(CASE WHEN cost_usd IS NULL THEN 1 ELSE 0 END) AS unpriced_traces
        FROM agents_trace WHERE session_id >= %s AND session_id < %s GROUP BY session_id
    ) AS t
    WHERE agents_session.id = t.session_id
    """,
    """
    UPDATE agents_session SET voice_cost_usd = c.cost_usd
    FROM agents_voicecall AS c
    WHERE c.session_id = agents_session.id AND c.ended_at IS NOT NULL AND c.cost_usd IS NOT NULL
        AND c.session_id >= %s AND c.session_id < %s
    """,
]


def backfill(apps, schema_editor):
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        cursor.execute("SELECT min(id), max(id) FROM agents_session")
        first, last = cursor.fetchone()
    if first is None:
        return
    for lo in range(first, last + 1, BATCH):
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            for statement in BACKFILL:
                cursor.execute(statement, [lo, lo + BATCH])


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("accounts", "0001_initial"),
        ("agents", "0008_voice_turn_confidence_optional"),
    ]

    operations = [
        migrations.AddField(
            model_name="session",
            name="input_tokens",
            field=models.BigIntegerField(db_default=0, default=0),
        ),
        migrations.AddField(
            model_name="session",
            name="output_tokens",
            field=models.BigIntegerField(db_default=0, default=0),
        ),
        migrations.AddField(
            model_name="session",
            name="latency_count",
            field=models.IntegerField(db_default=0, default=0),
        ),
        migrations.AddField(
            model_name="session",
            name="latency_sum_ms",
            field=models.BigIntegerField(db_default=0, default=0),
        ),
        migrations.AddField(
            model_name="session",
            name="llm_cost_usd",
            field=models.DecimalField(db_default=Decimal("0"), decimal_places=10, default=Decimal("0"), max_digits=20),
        ),
        migrations.AddField(
            model_name="session",
            name="unpriced_traces",
            field=models.IntegerField(db_default=0, default=0),
        ),
        migrations.AddField(
            model_name="session",
            name="voice_cost_usd",
            field=models.DecimalField(db_default=Decimal("0"), decimal_places=10, default=Decimal("0"), max_digits=20),
        ),
        migrations.AddField(
            model_name="session",
            name="cost_usd",
            field=models.GeneratedField(
                db_persist=True,
                expression=django.db.models.expressions.CombinedExpression(
                    models.F("llm_cost_usd"), "+", models.F("voice_cost_usd")
                ),
                output_field=models.DecimalField(decimal_places=10, max_digits=20),
            ),
        ),
        migrations.AddField(
            model_name="session",
            name="latency_avg_ms",
            field=models.GeneratedField(
                db_persist=True,
                expression=models.Case(
                    models.When(
                        latency_count__gt=0,
                        then=django.db.models.expressions.CombinedExpression(
                            django.db.models.functions.comparison.Cast("latency_sum_ms", models.FloatField()),
                            "/",
                            models.F("latency_count"),
                        ),
                    ),
                    default=None,
                    output_field=models.FloatField(),
                ),
                output_field=models.FloatField(null=True),
            ),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop, atomic=False),
    ]
