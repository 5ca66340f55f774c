"""Indexes for the Traces and Conversations lists: sorting by latency and cost
(keyset on value and id), and text search. On PostgreSQL they are built
CONCURRENTLY, so ingestion goes on while they are built on a large table, and
the text search gets a full-text GIN index; SQLite searches with LIKE."""

import django.db.models.functions.comparison
from django.db import migrations, models

# The words a search looks for (agents.search.SEARCH_VECTOR_SQL renders the same
# expression, so PostgreSQL answers "… @@ plainto_tsquery(…)" from this index).
SEARCH_INDEX = (
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS trace_search_fts ON agents_trace USING gin "
    "((to_tsvector('simple'::regconfig, left(input || ' ' || output || ' ' || error, 100000))))"
)

INDEXES = [
    (
        "session",
        models.Index(models.F("organisation"), models.F("cost_usd"), models.F("id"), name="session_org_cost_id"),
    ),
    (
        "session",
        models.Index(
            models.F("organisation"),
            django.db.models.functions.comparison.Coalesce(models.F("latency_avg_ms"), models.Value(-1.0)),
            models.F("id"),
            name="session_org_latency_id",
        ),
    ),
    (
        "trace",
        models.Index(
            models.F("organisation"),
            django.db.models.functions.comparison.Coalesce(models.F("latency_ms"), models.Value(-1)),
            models.F("id"),
            name="trace_org_latency_id",
        ),
    ),
    (
        "trace",
        models.Index(
            models.F("organisation"),
            django.db.models.functions.comparison.Coalesce(
                models.F("cost_usd"),
                models.Value(-1),
                output_field=models.DecimalField(decimal_places=10, max_digits=20),
            ),
            models.F("id"),
            name="trace_org_cost_id",
        ),
    ),
]


def create(apps, schema_editor):
    postgres = schema_editor.connection.vendor == "postgresql"
    for model_name, index in INDEXES:
        model = apps.get_model("agents", model_name)
        if postgres:
            schema_editor.add_index(model, index, concurrently=True)
        else:
            schema_editor.add_index(model, index)
    if postgres:
        schema_editor.execute(SEARCH_INDEX)


def drop(apps, schema_editor):
    postgres = schema_editor.connection.vendor == "postgresql"
    for model_name, index in INDEXES:
        model = apps.get_model("agents", model_name)
        if postgres:
            schema_editor.remove_index(model, index, concurrently=True)
        else:
            schema_editor.remove_index(model, index)
    if postgres:
        schema_editor.execute("DROP INDEX CONCURRENTLY IF EXISTS trace_search_fts")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("agents", "0009_conversation_totals"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AddIndex(model_name=model_name, index=index) for model_name, index in INDEXES
            ],
            database_operations=[migrations.RunPython(create, drop, atomic=False)],
        ),
    ]
